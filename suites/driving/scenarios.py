"""Scenario builders on highway-env's road networks: road, traffic, ego start, route and outcome checks.

Road geometry comes from highway-env's own environments (``IntersectionEnv._make_road`` etc.); traffic is
highway-env's IDM/MOBIL vehicles. Each scenario uses its own IDM subclass: highway-env's intersection mutates
``IDMVehicle`` class attributes globally (DISTANCE_WANTED, COMFORT_ACC_*), which would leak between scenarios
run in one process.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from highway_env.envs.intersection_env import IntersectionEnv
from highway_env.envs.merge_env import MergeEnv
from highway_env.envs.roundabout_env import RoundaboutEnv
from highway_env.road.road import Road, RoadNetwork
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.kinematics import Vehicle

from suites.driving.control import Path

if TYPE_CHECKING:
    from suites.driving.suite import DrivingEnv


class LaneIndexer:
    """Vectorised ``RoadNetwork.get_closest_lane_index`` (same distance: |lateral| + longitudinal overshoot +
    |heading error|, first minimum). highway-env loops over every lane in Python for every vehicle at every
    step: 45% of a roundabout step. Built once per network object."""

    def __init__(self, network):
        from highway_env.road.lane import CircularLane, SineLane, StraightLane

        self.indexes, kind = [], []
        p = {k: [] for k in ("a", "b", "c", "d", "e", "f", "g", "h", "L", "amp", "pul", "pha")}
        for _from, tos in network.graph.items():
            for _to, lanes in tos.items():
                for i, lane in enumerate(lanes):
                    self.indexes.append((_from, _to, i))
                    if isinstance(lane, CircularLane):
                        kind.append(1)
                        vals = (*lane.center, lane.radius, lane.start_phase, lane.direction, 0, 0, 0)
                    elif isinstance(lane, StraightLane):
                        kind.append(0)
                        vals = (*lane.start, *lane.direction, *lane.direction_lateral, lane.heading)
                    else:
                        raise TypeError(f"LaneIndexer: unsupported lane type {type(lane).__name__}")
                    for k, v in zip("abcdefg", vals):
                        p[k].append(float(v))
                    p["h"].append(0.0)
                    p["L"].append(float(lane.length))
                    sine = isinstance(lane, SineLane)
                    p["amp"].append(float(lane.amplitude) if sine else 0.0)
                    p["pul"].append(float(lane.pulsation) if sine else 0.0)
                    p["pha"].append(float(lane.phase) if sine else 0.0)
        self.kind = np.array(kind)
        self.p = {k: np.array(v) for k, v in p.items()}
        self.circ = self.kind == 1

    def closest(self, position: np.ndarray, heading: float | None) -> tuple[str, str, int]:
        p, x, y = self.p, float(position[0]), float(position[1])
        # straight / sine
        dx, dy = x - p["a"], y - p["b"]
        s = dx * p["c"] + dy * p["d"]
        r = dx * p["e"] + dy * p["f"]
        r = r - p["amp"] * np.sin(p["pul"] * s + p["pha"])
        h_at = p["g"] + np.arctan(p["amp"] * p["pul"] * np.cos(p["pul"] * s + p["pha"]))
        # circular: a, b = centre, c = radius, d = start phase, e = direction
        cx, cy = x - p["a"], y - p["b"]
        phi = np.arctan2(cy, cx)
        phi = p["d"] + ((phi - p["d"] + np.pi) % (2 * np.pi) - np.pi)
        rr = np.hypot(cx, cy)
        s_c = p["e"] * (phi - p["d"]) * p["c"]
        r_c = p["e"] * (p["c"] - rr)
        radius = np.where(self.circ, p["c"], 1.0)
        h_c = p["e"] * s_c / radius + p["d"] + np.pi / 2 * p["e"]
        s = np.where(self.circ, s_c, s)
        r = np.where(self.circ, r_c, r)
        d = np.abs(r) + np.maximum(s - p["L"], 0) + np.maximum(-s, 0)
        if heading is not None:
            h_at = np.where(self.circ, h_c, h_at)
            d = d + np.abs((heading - h_at + np.pi) % (2 * np.pi) - np.pi)
        return self.indexes[int(np.argmin(d))]


def _indexer(network) -> LaneIndexer:
    ix = getattr(network, "_vla_lane_indexer", None)
    if ix is None:
        ix = network._vla_lane_indexer = LaneIndexer(network)
    return ix


class _NoReverse:
    """(1) highway-env integrates braking past zero: a stopped IDM car rolls backwards (MIN_SPEED is -40 m/s)
    into whoever waits behind it; speeds are clamped at 0 (no vehicle here reverses). (2) The closest-lane
    update uses the vectorised LaneIndexer."""

    def step(self, dt: float) -> None:
        super().step(dt)  # type: ignore[misc]
        if self.speed < 0:
            self.speed = 0.0

    def on_state_update(self) -> None:
        if self.road:
            self.lane_index = _indexer(self.road.network).closest(self.position, self.heading)
            self.lane = self.road.network.get_lane(self.lane_index)
            if self.road.record_history:
                self.history.appendleft(self.create_from(self))


class IntersectionIDM(_NoReverse, IDMVehicle):
    DISTANCE_WANTED = 7.0
    COMFORT_ACC_MAX = 6.0
    COMFORT_ACC_MIN = -3.0


class RoundaboutIDM(_NoReverse, IDMVehicle):
    pass


class MergeIDM(_NoReverse, IDMVehicle):
    pass


class HighwayIDM(_NoReverse, IDMVehicle):
    pass


class EgoVehicle(_NoReverse, Vehicle):
    """The ego car: a kinematic bicycle driven by (acceleration, steering) from the waypoint tracker.

    ``predict_trajectory_constant_speed`` is overridden: highway-env's RegulatedRoad calls it for every pair
    of vehicles, and the base implementation deep-copies the vehicle (and with it the whole road).
    """

    path: Path | None = None
    target_speed: float = 10.0

    def predict_trajectory_constant_speed(self, times: np.ndarray):
        times = np.asarray(times, float)
        if self.path is not None:
            s0, _ = self.path.project(self.position)
            s = s0 + self.speed * times
            return list(self.path.at(s)), list(self.path.heading(s))
        d = np.array([np.cos(self.heading), np.sin(self.heading)])
        return [self.position + d * self.speed * t for t in times], [self.heading] * len(times)


def _he(cls, rng: np.random.Generator, **config: Any):
    """A highway-env env object used only for its road builders and spawners (no reset, no viewer)."""
    he = cls.__new__(cls)
    he.config = cls.default_config()
    he.config.update(config)
    he._np_random = rng
    he.road = None
    he.controlled_vehicles = []
    return he


def lane_path(network: RoadNetwork, lanes: list[tuple[str, str, int]], start_s: float = 0.0, step: float = 1.0) -> tuple[Path, list[float]]:
    """Polyline through consecutive lanes; returns the path and the path arc length at each lane start."""
    pts, starts, acc = [], [], 0.0
    for i, idx in enumerate(lanes):
        lane = network.get_lane(idx)
        s0 = start_s if i == 0 else 0.0
        ss = np.arange(s0, lane.length, step)
        if len(ss) == 0:
            ss = np.array([s0])
        seg = np.array([lane.position(s, 0) for s in ss] + [lane.position(lane.length, 0)])
        if pts:
            acc += float(np.linalg.norm(seg[0] - pts[-1][-1]))
        starts.append(acc - s0 if i == 0 else acc)
        acc += float(np.sum(np.linalg.norm(np.diff(seg, axis=0), axis=1)))
        pts.append(seg)
    return Path(np.vstack(pts)), starts


class Scenario:
    name: str = ""
    suite_id: str = ""
    progress: str = "path"  # "path" (projection on the route polyline) or "x" (longitudinal world x)
    road_key: str = ""
    raster_kw: dict[str, Any] = {}

    def __init__(self, params: dict[str, Any]):
        self.p = params

    def tasks(self) -> list[tuple[str, str, dict[str, Any]]]:
        raise NotImplementedError

    def build(self, env: "DrivingEnv", tp: dict[str, Any], rng: np.random.Generator) -> None:
        raise NotImplementedError

    def on_step(self, env: "DrivingEnv") -> None:
        pass

    def check(self, env: "DrivingEnv") -> str | None:
        """'success', 'wrong_route', 'wrong_speed' or None (still running)."""
        raise NotImplementedError

    def _ego(self, env: "DrivingEnv", road: Road, pos, heading: float, speed: float) -> EgoVehicle:
        ego = EgoVehicle(road, pos, heading, speed)
        ego.target_speed = speed
        road.vehicles.append(ego)
        return ego


# ------------------------------------------------------------------------------------------------
class Intersection(Scenario):
    """highway-env ``intersection-v1`` geometry: the ego comes from the south (o0) and exits at o1 (left),
    o2 (straight) or o3 (right); crossing traffic with priority, spawned at ``spawn_probability`` per second."""

    name, suite_id, road_key = "intersection", "driving_intersection-v1", "intersection"

    def tasks(self):
        return [("turn_left", "turn left at the intersection", {"dest": "o1", "turn": "left"}),
                ("go_straight", "go straight through the intersection", {"dest": "o2", "turn": "straight"}),
                ("turn_right", "turn right at the intersection", {"dest": "o3", "turn": "right"})]

    def build(self, env, tp, rng):
        p = self.p
        he = _he(IntersectionEnv, rng, other_vehicles_type="suites.driving.scenarios.IntersectionIDM",
                 simulation_frequency=env.sim_hz, neighbour_vehicles_connected_lanes=bool(p["connected_lanes"]))
        he._make_road()
        road = he.road
        env.he, env.road = he, road
        n = int(p["initial_vehicles"])
        for t in range(n - 1):
            he._spawn_vehicle(float(np.linspace(0, 80, n)[t]), spawn_probability=float(p["spawn_probability"]))
        for _ in range(int(3 * env.sim_hz)):  # warm-up (highway-env: 3 s)
            road.act()
            road.step(1.0 / env.sim_hz)
        he._spawn_vehicle(60, spawn_probability=1.0, go_straight=True, position_deviation=0.1, speed_deviation=0.0)
        lane_idx = ("o0", "ir0", 0)
        lane = road.network.get_lane(lane_idx)
        lon = float(p["ego_start"]) + float(p["ego_start_std"]) * float(rng.normal())
        ego = self._ego(env, road, lane.position(lon, 0.0), lane.heading_at(lon), float(p["ego_speed"]))
        he.controlled_vehicles = [ego]
        for v in list(road.vehicles):
            if v is not ego and np.linalg.norm(v.position - ego.position) < 20:
                road.vehicles.remove(v)
        d = tp["dest"]
        k = d[1]
        path, starts = lane_path(road.network, [lane_idx, ("ir0", f"il{k}", 0), (f"il{k}", d, 0)], start_s=max(lon - 10, 0))
        env.route = path
        env.route_end = starts[2] + float(p["arrive_distance"])
        ego.path = path
        ego.target_speed = float(p["desired_speed"])

    def on_step(self, env):
        every = int(round(env.policy_hz / float(self.p["spawn_hz"])))
        if env.steps % every == 0:
            env.he._clear_vehicles()
            env.he._spawn_vehicle(spawn_probability=float(self.p["spawn_probability"]))

    def check(self, env):
        li = env.ego.lane_index
        if li[0].startswith("il") and li[1].startswith("o"):
            lon = env.ego.lane.local_coordinates(env.ego.position)[0]
            if li[1] == env.task_params["dest"]:
                if lon >= float(self.p["arrive_distance"]):
                    return "success"
            elif lon >= 3.0:
                return "wrong_route"
        return None


# ------------------------------------------------------------------------------------------------
class Roundabout(Scenario):
    """highway-env ``roundabout-v0`` geometry: the ego enters from the south and takes the 1st (east),
    2nd (north) or 3rd (west) exit; traffic circulates counter-clockwise (on screen) and has priority."""

    name, suite_id, road_key = "roundabout", "driving_roundabout-v1", "roundabout"
    EXITS = {"e": "first", "n": "second", "w": "third"}

    def tasks(self):
        return [(f"exit_{i + 1}", f"take the {word} exit at the roundabout", {"dest": x, "exit": i + 1})
                for i, (x, word) in enumerate(self.EXITS.items())]

    def build(self, env, tp, rng):
        p = self.p
        he = _he(RoundaboutEnv, rng, neighbour_vehicles_connected_lanes=bool(p["connected_lanes"]))
        he._make_road()
        road = he.road
        env.he, env.road = he, road
        net = road.network
        dests = ["exr", "sxr", "nxr", "wxr"]
        sp, sd = float(p["ring_speed"]), float(p["ring_speed_std"])

        def add(lane_idx, lon, speed):
            v = RoundaboutIDM.make_on_lane(road, lane_idx, longitudinal=lon, speed=speed)
            v.target_speed = speed
            v.plan_route_to(str(rng.choice(dests)))
            v.randomize_behavior()
            v.enable_lane_change = bool(p["ring_lane_changes"])
            if all(np.linalg.norm(v.position - o.position) > 12 for o in road.vehicles):
                road.vehicles.append(v)

        add(("we", "sx", 1), 5.0 + rng.normal() * 2, sp + rng.normal() * sd)
        for i in (1, -1):  # TUNED: highway-env puts these on the inner lane; inner-lane cars cut across the
            add(("we", "sx", 1), 20.0 * i + rng.normal() * 2, sp + rng.normal() * sd)
        for k in range(int(p["extra_ring_vehicles"])):
            seg = [("se", "ex"), ("ee", "nx"), ("ne", "wx")][k % 3]
            add((*seg, 1), float(rng.uniform(0, 10)), sp + rng.normal() * sd)
        for entry in p["entering_from"]:
            add((f"{entry}er", f"{entry}es", 0), 50.0 + rng.normal() * 8, sp + 2 + rng.normal() * sd)
        lon = float(p["ego_start"]) + float(rng.uniform(-5, 5))
        lane_idx = ("ser", "ses", 0)
        lane = net.get_lane(lane_idx)
        ego = self._ego(env, road, lane.position(lon, 0.0), lane.heading_at(lon), float(p["ego_speed"]))
        for v in list(road.vehicles):
            if v is not ego and np.linalg.norm(v.position - ego.position) < 20:
                road.vehicles.remove(v)
        x = tp["dest"]
        ring = ["se", "ex", "ee", "nx", "ne", "wx", "we", "sx"]
        stop = ring.index(f"{x}x")
        lanes = [lane_idx, ("ses", "se", 0)] + [(ring[i], ring[i + 1], 1) for i in range(stop)] \
            + [(f"{x}x", f"{x}xs", 0), (f"{x}xs", f"{x}xr", 0)]
        path, starts = lane_path(net, lanes, start_s=max(lon - 10, 0))
        env.route = path
        env.route_end = starts[-1] + float(p["arrive_distance"])
        ego.path = path
        ego.target_speed = float(p["desired_speed"])

    def check(self, env):
        li = env.ego.lane_index
        lon = env.ego.lane.local_coordinates(env.ego.position)[0]
        if li[0].endswith("xs") and li[1].endswith("xr"):
            if li[0][0] == env.task_params["dest"]:
                return "success" if lon >= float(self.p["arrive_distance"]) else None
            return "wrong_route"
        if li[0].endswith("x") and li[1].endswith("xs") and li[0][0] != env.task_params["dest"] and lon >= 8:
            return "wrong_route"
        return None


# ------------------------------------------------------------------------------------------------
class Merge(Scenario):
    """highway-env ``merge-v0`` geometry: the ego starts on the access ramp, merges into the right lane of a
    two-lane highway before the ramp ends (an obstacle closes it at x = 310 m), then keeps the right lane or
    changes to the left lane as instructed; checked at x = ``end_x``."""

    name, suite_id, road_key, progress = "merge", "driving_merge-v1", "merge", "x"
    LANE_Y = (0.0, 4.0)

    def tasks(self):
        return [("merge_keep_right", "merge onto the highway and keep the right lane", {"lane": 1}),
                ("merge_then_left", "merge onto the highway, then change to the left lane", {"lane": 0})]

    def build(self, env, tp, rng):
        p = self.p
        he = _he(MergeEnv, rng)
        he._make_road()
        road = he.road
        env.he, env.road = he, road
        lane_idx = ("j", "k", 0)
        lane = road.network.get_lane(lane_idx)
        lon = float(p["ego_start"]) + float(rng.uniform(-5, 5))
        ego = self._ego(env, road, lane.position(lon, 0.0), lane.heading_at(lon), float(p["ego_speed"]))
        placed: list[tuple[int, float]] = []
        tries = 0
        while len(placed) < int(p["highway_vehicles"]) and tries < 200:
            tries += 1
            ln = int(rng.integers(2))
            x = float(rng.uniform(*p["highway_x_range"]))
            if any(l2 == ln and abs(x - x2) < float(p["min_spacing"]) for l2, x2 in placed):
                continue
            placed.append((ln, x))
            speed = float(rng.uniform(*p["highway_speed_range"]))
            v = MergeIDM(road, road.network.get_lane(("a", "b", ln)).position(x, 0.0), speed=speed)
            v.target_speed = speed
            v.randomize_behavior()
            road.vehicles.append(v)
        env.x_start, env.route_end_x = float(ego.position[0]), float(p["end_x"])
        ego.target_speed = float(p["desired_speed"])

    def lane_of(self, y: float) -> int:
        return int(np.argmin([abs(y - ly) for ly in self.LANE_Y])) if y < 6.0 else 2

    def check(self, env):
        x, y = env.ego.position
        lane = self.lane_of(y)
        if x >= float(self.p["lane_deadline_x"]) and lane != env.task_params["lane"]:
            return "wrong_route"  # not in the instructed lane after the deadline: the route is missed
        if x >= env.route_end_x:
            return "success" if lane == env.task_params["lane"] else "wrong_route"
        return None


# ------------------------------------------------------------------------------------------------
class Highway(Scenario):
    """highway-env ``highway-fast-v0`` road (straight, 3 lanes, IDM/MOBIL traffic, other-other collisions
    disabled as in highway-fast): change to the left/right lane, or keep the lane at an instructed speed."""

    name, suite_id, road_key, progress = "highway", "driving_highway-v1", "highway", "x"
    raster_kw = {"bounds": (0.0, -8.0, 40.0, 16.0), "period_x": 20.0}

    def tasks(self):
        out = [("change_left", "change to the left lane", {"lane": 0, "speed": None}),
               ("change_right", "change to the right lane", {"lane": 2, "speed": None})]
        for kmh in self.p["keep_speeds_kmh"]:
            out.append((f"keep_lane_{kmh}kmh", f"keep the lane at {kmh} km/h", {"lane": 1, "speed": kmh / 3.6}))
        return out

    def build(self, env, tp, rng):
        p = self.p
        lanes = int(p["lanes"])
        net = RoadNetwork.straight_road_network(lanes, speed_limit=30.0)
        road = Road(network=net, np_random=rng, record_history=False)
        env.he, env.road = None, road
        x0 = float(p["ego_x"])
        ego = self._ego(env, road, np.array([x0, 4.0 * 1]), 0.0, float(p["ego_speed"]))
        x = x0
        base = np.exp(-5 / 40 * lanes)
        for _ in range(int(p["vehicles_ahead"])):
            speed = float(rng.uniform(*p["traffic_speed_range"]))
            x += float(p["spacing"]) * (12 + speed) * base * float(rng.uniform(0.9, 1.1))
            ln = int(rng.integers(lanes))
            v = HighwayIDM(road, np.array([x, 4.0 * ln]), 0.0, speed)
            v.target_speed = speed
            v.randomize_behavior()
            v.check_collisions = False
            road.vehicles.append(v)
        for k in range(int(p["vehicles_behind"])):
            speed = float(rng.uniform(*p["traffic_speed_range"])) + 2.0
            ln = [0, 2][k % 2]
            v = HighwayIDM(road, np.array([x0 - float(rng.uniform(25, 50)), 4.0 * ln]), 0.0, speed)
            v.target_speed = speed
            v.randomize_behavior()
            v.check_collisions = False
            road.vehicles.append(v)
        env.x_start, env.route_end_x = x0, x0 + float(p["route_length"])
        ego.target_speed = tp["speed"] or float(p["desired_speed"])

    def lane_of(self, y: float) -> int:
        return int(np.clip(np.round(y / 4.0), 0, int(self.p["lanes"]) - 1))

    def check(self, env):
        x, y = env.ego.position
        lane = self.lane_of(y)
        if env.task_params["speed"] is not None and lane != env.task_params["lane"] and abs(y - 4.0 * lane) < 1.0:
            return "wrong_route"  # left the lane it was told to keep
        if x >= env.x_start + float(self.p["lane_deadline"]) and lane != env.task_params["lane"]:
            return "wrong_route"
        if x >= env.route_end_x:
            if lane != env.task_params["lane"]:
                return "wrong_route"
            if env.task_params["speed"] is not None and env.speed_compliance() < float(self.p["speed_compliance_min"]):
                return "wrong_speed"
            return "success"
        return None


SCENARIOS: dict[str, type[Scenario]] = {c.name: c for c in (Intersection, Roundabout, Merge, Highway)}
