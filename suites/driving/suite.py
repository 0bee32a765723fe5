"""The closed-loop driving suite on highway-env: intersection, roundabout, merge and highway scenarios with
natural-language instructions, a bird's-eye camera, waypoint actions and CARLA/NAVSIM-style metrics
(computed on highway-env, labelled as such). Layouts and sources: protocol.yaml and README.md.
"""
from __future__ import annotations

import math
import os

os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")  # before anything imports pygame (highway-env does)

from typing import Any, Iterable

import gymnasium as gym
import numpy as np

from harness.interfaces import EpisodeResult, EpisodeSpec, Policy, Profile, Suite, Task, derive_seed
from highway_env.vehicle.objects import Obstacle
from suites.driving import metrics as M
from suites.driving.control import TrackerGains, WaypointTracker, ego_to_world, world_to_ego, wrap
from suites.driving.render import BevCamera, road_raster
from suites.driving.scenarios import SCENARIOS, Scenario

PROPRIO_LAYOUT = ("speed_mps", "heading_rad", "yaw_rate_radps", "accel_mps2", "steer_cmd_rad_left", "accel_cmd_mps2")
TERMINAL = {"success", "wrong_route", "wrong_speed", "vehicle_collision", "static_collision", "off_road", "blocked"}
OUTCOME_INFRACTION = {"wrong_route": "wrong_route", "wrong_speed": "wrong_speed", "off_road": "off_road",
                      "vehicle_collision": "vehicle_collision", "static_collision": "static_collision",
                      "timeout": "timeout_blocked", "blocked": "timeout_blocked"}


class DrivingEnv(gym.Env):
    """One (scenario, instruction) task. ``reset(seed, options={"episode": spec})`` builds the scene from the seed."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, scenario: Scenario, task: Task, protocol: dict[str, Any], privileged: bool = False,
                 camera_size: int | None = None, action_mode: str | None = None):
        self.scenario, self.task, self.protocol, self.privileged = scenario, task, protocol, privileged
        self.task_params = dict(task.meta["params"])
        ctl, act, cam = protocol["control"], protocol["action"], protocol["camera"]
        self.policy_hz, self.sim_hz = int(ctl["policy_hz"]), int(ctl["sim_hz"])
        if self.sim_hz % self.policy_hz:
            raise ValueError(f"sim_hz ({self.sim_hz}) must be a multiple of policy_hz ({self.policy_hz})")
        self.dt = 1.0 / self.policy_hz
        self.action_mode = action_mode or act["mode"]
        if self.action_mode not in ("waypoints", "control"):
            raise ValueError(f"action_mode must be 'waypoints' or 'control', got {self.action_mode!r}")
        self.n_wp, self.wp_dt = int(act["n_waypoints"]), float(act["waypoint_dt"])
        self.tracker = WaypointTracker(self.wp_dt, TrackerGains(**protocol.get("tracker", {})))
        if self.action_mode == "waypoints":
            lo = np.tile(np.array(act["waypoint_low"], np.float32), self.n_wp)
            hi = np.tile(np.array(act["waypoint_high"], np.float32), self.n_wp)
            self.action_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        else:
            self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        size = int(camera_size or cam["size"])
        self.camera = BevCamera(size, float(cam["range_m"]), float(cam["ego_row"]))
        self.cam_name = cam["name"]
        self.observation_space = gym.spaces.Dict({
            "images": gym.spaces.Dict({self.cam_name: gym.spaces.Box(0, 255, (size, size, 3), np.uint8)}),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (len(PROPRIO_LAYOUT),), np.float32),
        })
        self.mp = protocol["metrics"]
        self.sp = protocol["scenarios"][scenario.name]
        self.raster = None
        self.road = None
        self.ego = None

    # ------------------------------------------------------------------ reset / step
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        spec = (options or {}).get("episode")
        if spec is not None and not isinstance(spec, EpisodeSpec):
            raise TypeError(f"options['episode'] must be an EpisodeSpec, got {type(spec).__name__}")
        self.max_steps = int(spec.max_steps) if spec is not None else int(self.sp["max_steps"])
        rng = np.random.default_rng(seed)
        self.route = None
        self.route_end = None
        self.x_start = self.route_end_x = None
        # what the ego is told (route, target lane/speed): the task's own instruction. Tests may pass
        # options["route_params"] to build another instruction's route while success still checks the task's.
        self.instructed = dict((options or {}).get("route_params") or self.task_params)
        self.scenario.build(self, self.instructed, rng)
        self.ego = next(v for v in self.road.vehicles if type(v).__name__ == "EgoVehicle")
        if self.raster is None:
            self.raster = road_raster(self.scenario.road_key, self.road.network, **self.scenario.raster_kw)
        self.tracker.reset()
        self.steps, self.t = 0, 0.0
        self.outcome = "running"
        self.collision: dict[str, Any] | None = None
        self.off_road_steps = 0
        self.ever_off_road = False
        self.cmd = (0.0, 0.0)
        self.prev_speed, self.prev_heading = float(self.ego.speed), float(self.ego.heading)
        self.yaw_rate = self.accel = 0.0
        if self.route is not None:
            self.s_start, _ = self.route.project(self.ego.position)
            self.s_max = self.s_last = self.s_start
        self.trace: dict[str, list] = {k: [] for k in ("speed", "heading", "ttc_ok", "following", "x", "y")}
        self._wp_world = None
        return self._obs(), self._info()

    def step(self, action: np.ndarray):
        if self.ego is None:
            raise RuntimeError("step() before reset()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action has shape {a.shape}, expected {self.action_space.shape} ({self.action_mode})")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action contains NaN/inf: {a}")
        ego = self.ego
        if self.action_mode == "waypoints":
            self._wp_world = ego_to_world(a.reshape(self.n_wp, 2), ego.position.copy(), float(ego.heading))
        n_sub = self.sim_hz // self.policy_hz
        dt_sim = 1.0 / self.sim_hz
        for _ in range(n_sub):
            if self.action_mode == "waypoints":
                wp = world_to_ego(self._wp_world, ego.position, float(ego.heading))
                acc, steer = self.tracker.control(wp, float(ego.speed), dt_sim)
            else:
                acc = float(np.clip(a[0], -1, 1)) * 5.0
                steer = -float(np.clip(a[1], -1, 1)) * np.pi / 4  # action: positive = left
            self.cmd = (acc, -steer)
            ego.act({"acceleration": acc, "steering": steer})
            self.road.act()
            self.road.step(dt_sim)
        self.steps += 1
        self.t += self.dt
        self.scenario.on_step(self)
        self._bookkeeping()
        terminated = self.outcome in TERMINAL
        truncated = not terminated and self.steps >= self.max_steps
        if truncated:
            self.outcome = self._timeout_kind()
        return self._obs(), float(self.outcome == "success"), terminated, truncated, self._info()

    # ------------------------------------------------------------------ state bookkeeping
    def _bookkeeping(self) -> None:
        ego = self.ego
        v, h = float(ego.speed), float(ego.heading)
        self.accel = (v - self.prev_speed) / self.dt
        self.yaw_rate = float(wrap(h - self.prev_heading)) / self.dt
        self.prev_speed, self.prev_heading = v, h
        # progress
        if self.route is not None:
            s, lat = self.route.project(ego.position, s_hint=self.s_last, window=15.0)
            self.s_last = s
            if abs(lat) <= float(self.mp["route_tolerance_m"]):
                self.s_max = max(self.s_max, s)
        # collisions
        if ego.crashed and self.collision is None:
            self.collision = self._collision_partner()
            self.outcome = self.collision["kind"]
        # drivable area: centre and the four (shrunk) corners must be on a lane
        c, s_ = math.cos(h), math.sin(h)
        fx, fy = 0.35 * ego.LENGTH, 0.35 * ego.WIDTH
        xs = ego.position[0] + np.array([0, fx * c - fy * s_, fx * c + fy * s_, -fx * c - fy * s_, -fx * c + fy * s_])
        ys = ego.position[1] + np.array([0, fx * s_ + fy * c, fx * s_ - fy * c, -fx * s_ + fy * c, -fx * s_ - fy * c])
        on = self.raster.lookup_drivable(xs, ys)
        if not on.all():
            self.ever_off_road = True
        self.off_road_steps = 0 if on[0] else self.off_road_steps + 1
        if self.outcome == "running" and self.off_road_steps >= int(self.mp["off_road_terminate_steps"]):
            self.outcome = "off_road"
        # route / destination
        if self.outcome == "running":
            res = self.scenario.check(self)
            if res is not None:
                self.outcome = res
        ttc_ok, following = self._ttc_and_following()
        for k, val in (("speed", v), ("heading", h), ("ttc_ok", ttc_ok), ("following", following),
                       ("x", float(ego.position[0])), ("y", float(ego.position[1]))):
            self.trace[k].append(val)

    def _collision_partner(self) -> dict[str, Any]:
        ego = self.ego
        cands = [o for o in self.road.vehicles + self.road.objects if o is not ego and (o.crashed or getattr(o, "hit", False))]
        if not cands:
            cands = [o for o in self.road.vehicles + self.road.objects if o is not ego]
        other = min(cands, key=lambda o: np.linalg.norm(o.position - ego.position))
        rel = world_to_ego(other.position, ego.position, float(ego.heading))
        static = isinstance(other, Obstacle)
        rear_ended = bool(rel[0] < -0.5 * ego.LENGTH and abs(rel[1]) < ego.WIDTH * 1.5)
        at_fault = not static and not rear_ended and float(self.trace["speed"][-1] if self.trace["speed"] else ego.speed) > 0.5
        return {"kind": "static_collision" if static else "vehicle_collision", "at_fault": bool(at_fault),
                "other": type(other).__name__, "rel_pos": [float(rel[0]), float(rel[1])], "t": round(self.t, 2)}

    def _ttc_and_following(self) -> tuple[bool, bool]:
        """TTC: constant-velocity projection of ego and every vehicle/object ahead over ttc_horizon_s; False if the
        boxes (3 discs each) would overlap while the ego moves. Following: a leader within 2.5 s headway in lane."""
        ego = self.ego
        others = [o for o in self.road.vehicles + self.road.objects if o is not ego]
        if not others:
            return True, False
        P = np.array([o.position for o in others])
        rel = world_to_ego(P, ego.position, float(ego.heading))
        near = (np.abs(rel[:, 0]) < 60) & (np.abs(rel[:, 1]) < 60)
        following = bool(np.any((rel[:, 0] > 0) & (np.abs(rel[:, 1]) < 2.0)
                                & (rel[:, 0] - ego.LENGTH < max(2.5 * float(ego.speed), 10.0))))
        ahead = near & (rel[:, 0] > 0)
        if float(ego.speed) < 0.5 or not ahead.any():
            return True, following
        idx = np.nonzero(ahead)[0]
        H = np.array([others[i].heading for i in idx])
        V = np.array([others[i].speed for i in idx])
        Po = P[idx]
        t = np.arange(1, int(round(float(self.mp["ttc_horizon_s"]) / 0.1)) + 1) * 0.1
        offs = np.array([-1.6, 0.0, 1.6])
        eh = float(ego.heading)
        ed = np.array([math.cos(eh), math.sin(eh)])
        ego_c = ego.position[None, :] + ed[None, :] * float(ego.speed) * t[:, None]  # (T,2)
        ego_d = ego_c[:, None, :] + offs[None, :, None] * ed[None, None, :]  # (T,3,2)
        od = np.stack([np.cos(H), np.sin(H)], axis=1)  # (N,2)
        oc = Po[:, None, :] + od[:, None, :] * (V[:, None, None] * t[None, :, None])  # (N,T,2)
        o_d = oc[:, :, None, :] + offs[None, None, :, None] * od[:, None, None, :]  # (N,T,3,2)
        dist = np.linalg.norm(ego_d[None, :, :, None, :] - o_d[:, :, None, :, :], axis=-1)
        return bool(dist.min() >= 2 * 1.35), following  # 3 discs of r = 1.35 m cover a 5 x 2 m box

    def _timeout_kind(self) -> str:
        sp = self.trace["speed"][-int(5 * self.policy_hz):]
        return "blocked" if sp and max(sp) < 0.5 else "timeout"

    def speed_compliance(self) -> float:
        """Share of steps after the warm-up with |v - v*| <= tol, or v < v* while following a leader."""
        target = self.task_params.get("speed")
        if target is None:
            return 1.0
        w = int(float(self.sp["speed_warmup_s"]) * self.policy_hz)
        v = np.asarray(self.trace["speed"][w:])
        f = np.asarray(self.trace["following"][w:], bool)
        if len(v) == 0:
            return 0.0
        ok = (np.abs(v - target) <= float(self.sp["speed_tolerance_mps"])) | ((v < target) & f)
        return float(ok.mean())

    def route_completion(self) -> float:
        if self.outcome == "success":
            return 100.0
        if self.route is not None:
            frac = (self.s_max - self.s_start) / max(self.route_end - self.s_start, 1e-6)
        else:
            xs = self.trace["x"] or [self.x_start]
            frac = (max(xs) - self.x_start) / max(self.route_end_x - self.x_start, 1e-6)
        return float(100.0 * np.clip(frac, 0.0, 0.999))  # 100 only with success (arrived at the right place)

    # ------------------------------------------------------------------ obs / info / metrics
    def _obs(self) -> dict[str, Any]:
        ego = self.ego
        others = [v for v in self.road.vehicles if v is not ego]
        img = self.camera.render(self.raster, ego, others, self.road.objects)
        proprio = np.array([ego.speed, wrap(ego.heading), self.yaw_rate, self.accel, self.cmd[1], self.cmd[0]],
                           dtype=np.float32)
        obs = {"images": {self.cam_name: img}, "proprio": proprio, "instruction": self.task.instruction}
        if self.privileged:
            obs["privileged"] = {"env": self, "road": self.road, "ego": ego, "scenario": self.scenario.name,
                                 "task_params": self.task_params, "t": self.t}
        return obs

    def _info(self) -> dict[str, Any]:
        return {"success": self.outcome == "success", "outcome": self.outcome, "crashed": bool(self.ego.crashed),
                "on_road": self.off_road_steps == 0, "speed": float(self.ego.speed),
                "route_completion": self.route_completion(), "simulator": M.SIMULATOR}

    def render(self) -> np.ndarray:
        return self._obs()["images"][self.cam_name]

    def episode_metrics(self) -> dict[str, Any]:
        outcome = self.outcome if self.outcome != "running" else self._timeout_kind()
        infractions = {k: 0 for k in M.INFRACTION_KINDS}
        if outcome in OUTCOME_INFRACTION:
            infractions[OUTCOME_INFRACTION[outcome]] += 1
        rc = self.route_completion() if self.outcome != "running" else min(self.route_completion(), 99.999)
        m = M.episode_metrics(
            route_completion=rc, infractions=infractions,
            at_fault_vehicle_collision=bool(self.collision and self.collision["kind"] == "vehicle_collision"
                                            and self.collision["at_fault"]),
            static_collision=bool(self.collision and self.collision["kind"] == "static_collision"),
            ever_off_road=self.ever_off_road, ttc_ok=np.asarray(self.trace["ttc_ok"], bool),
            speed=np.asarray(self.trace["speed"]), heading=np.asarray(self.trace["heading"]), dt=self.dt,
            params=self.mp)
        sp = self.trace["speed"]
        return {"simulator": M.SIMULATOR, "scenario": self.scenario.name, "task_key": self.task.meta["key"],
                "success": outcome == "success", "outcome": outcome, "infractions": infractions,
                "collision": self.collision, "duration_s": round(self.t, 2),
                "mean_speed": float(np.mean(sp)) if sp else 0.0,
                "speed_compliance": self.speed_compliance() if self.task_params.get("speed") else None, **m}

    def close(self) -> None:
        self.road = None
        self.ego = None


class DrivingSuite(Suite):
    """A driving suite over one or more scenarios; ``driving`` is the union of all four."""

    teacher = "reference"

    def __init__(self, scenarios: list[str] | None = None, suite_id: str = "driving"):
        super().__init__()
        names = list(scenarios or SCENARIOS)
        bad = [n for n in names if n not in SCENARIOS]
        if bad:
            raise ValueError(f"unknown driving scenario(s) {bad}; known: {sorted(SCENARIOS)}")
        self.suite_id = suite_id
        self.scenario_names = names
        self.cameras = (self.protocol["camera"]["name"],)
        self.description = "closed-loop driving on highway-env: " + ", ".join(names)
        self._scen = {n: SCENARIOS[n](self.protocol["scenarios"][n]) for n in names}
        self._tasks = [Task(f"{n}_{key}", instr, 0, {"scenario": n, "key": key, "params": tp})
                       for n in names for key, instr, tp in self._scen[n].tasks()]
        self._tasks = [Task(t.name, t.instruction, i, t.meta) for i, t in enumerate(self._tasks)]

    def tasks(self) -> list[Task]:
        return list(self._tasks)

    def _per_scenario(self, profile: str) -> int:
        cfg = self.protocol["profiles"][profile]
        return int(cfg["episodes_per_scenario"])

    def profiles(self) -> dict[str, Profile]:
        out = {}
        for name in self.protocol["profiles"]:
            e = self._per_scenario(name)
            trials = max(math.ceil(e / len(self._scen[n].tasks())) for n in self.scenario_names)
            out[name] = Profile(name, trials_per_task=trials)
        return out

    def max_steps(self, task: Task) -> int:
        return int(self.protocol["scenarios"][task.meta["scenario"]]["max_steps"])

    def episode_seed(self, task: Task, trial: int) -> int:
        # the scenario's own id, so `driving` and `driving_<scenario>-v1` share seeds and initial states
        return derive_seed(self._scen[task.meta["scenario"]].suite_id, task.meta["key"], trial)

    def episodes(self, profile: str) -> list[EpisodeSpec]:
        prof = self.profile(profile)
        e = self._per_scenario(profile)
        out = []
        for n in self.scenario_names:
            tasks = [t for t in self._tasks if t.meta["scenario"] == n]
            total = e if profile == "smoke" else math.ceil(e / len(tasks)) * len(tasks)
            per_task: dict[str, list[int]] = {t.name: [] for t in tasks}
            for i in range(total):
                per_task[tasks[i % len(tasks)].name].append(prof.first_trial + i // len(tasks))
            for t in tasks:
                steps = prof.max_steps or self.max_steps(t)
                out += [EpisodeSpec(f"{t.name}/{k:03d}", t, k, self.episode_seed(t, k), steps) for k in per_task[t.name]]
        return out

    def make_env(self, task: Task, *, privileged: bool = False, **options: Any) -> DrivingEnv:
        unknown = set(options) - {"camera_size", "action_mode"}
        if unknown:
            raise TypeError(f"unknown make_env option(s) {sorted(unknown)}; known: camera_size, action_mode")
        return DrivingEnv(self._scen[task.meta["scenario"]], task, self.protocol, privileged, **options)

    def aggregate(self, episodes: Iterable[EpisodeResult]) -> dict[str, Any]:
        rows = []
        for e in episodes:
            if e.metrics and "driving_score" in e.metrics:
                rows.append({**e.metrics, "success": bool(e.success)})
        return M.aggregate(rows)

    def provenance(self) -> dict[str, Any]:
        import highway_env

        p = self.protocol
        return {"simulator": "highway-env", "highway_env_version": getattr(highway_env, "__version__", "1.12.1"),
                "scenarios": self.scenario_names, "camera": p["camera"], "control": p["control"],
                "action": {k: p["action"][k] for k in ("mode", "n_waypoints", "waypoint_dt")},
                "render": "vla-bench numpy BEV rasteriser (suites/driving/render.py)"}

    def expert(self) -> Policy:
        from suites.driving.expert import DrivingExpert

        return DrivingExpert(self.protocol)

    def demonstrations(self) -> Any:
        from suites.driving.demos import DrivingDemos, default_root

        return DrivingDemos(default_root(), scenarios=self.scenario_names)
