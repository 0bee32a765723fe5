"""The privileged scripted driving expert: demonstrator and ceiling row. It outputs the same action as the
learned policies — 8 temporal waypoints in the ego frame — and a short commentary of its decision.

Per step (10 Hz), from the simulator's state (``obs["privileged"]["env"]``):
1. a reference path: the instructed route's lanes (intersection, roundabout) or a lane-blend path whose lane
   changes are started only when gap acceptance holds (merge, highway);
2. a longitudinal plan: IDM towards the desired speed behind the leader on the path, capped by a curvature speed
   limit; then a sampling check of constant-acceleration profiles against every other vehicle's predicted motion
   along its own route (constant speed, highway-env's ``predict_trajectory_constant_speed``) over 5 s — the
   fastest collision-free profile wins (yielding to crossing / circulating / merging traffic);
3. waypoints = positions along the path at t = 0.25 ... 2.0 s of that profile.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.interfaces import ActionChunk, Policy, Task
from suites.driving.control import Path, TrackerGains, WaypointTracker, world_to_ego

VERSION = "driving-expert-1.1"
CANDIDATES = (2.0, 1.0, 0.0, -1.0, -2.0, -3.0, -4.0, -6.0)
PLAN_DT, PLAN_T = 0.25, 6.0
DISC_OFFS = np.array([-1.6, 0.0, 1.6])
CLEARANCE = 3.6  # disc-centre distance under which two cars are taken to collide (3 discs per car; covers the corners)
IDM = {"a": 2.0, "b": 3.0, "T": 1.5, "s0": 5.0, "delta": 4.0}
A_LAT_MAX = 3.0
JERK_UP, JERK_DOWN = 3.0, 6.0  # m/s^3 limits on the planned acceleration (down: unlimited when yielding)
SIDE = {0: "left", 1: "middle", 2: "right"}


class DrivingExpert(Policy):
    actions_per_call = 1.0
    version = VERSION

    def __init__(self, protocol: dict[str, Any]):
        self.p = protocol
        self.n_wp = int(protocol["action"]["n_waypoints"])
        self.wp_dt = float(protocol["action"]["waypoint_dt"])
        self.tracker = WaypointTracker(self.wp_dt, TrackerGains(**protocol.get("tracker", {})))
        self.task: Task | None = None
        self.reset(None, 0)  # type: ignore[arg-type]

    def reset(self, task: Task, seed: int) -> None:
        self.task = task
        self.cur_lane: int | None = None
        self.lc: dict[str, float] | None = None  # {"from", "to", "x0", "length"}
        self.s_hint: float | None = None
        self.decision: dict[str, Any] = {}
        self.tracker.reset()
        self.n_calls = 0
        self.reasons: dict[str, int] = {}
        self._ramp = None
        self.want: int | None = None
        self.prev_acc = 0.0

    # ------------------------------------------------------------------ public
    def infer(self, obs: dict) -> ActionChunk:
        if "privileged" not in obs:
            raise KeyError("the driving expert needs obs['privileged'] (make_env(..., privileged=True))")
        env = obs["privileged"]["env"]
        wp, dec = self.plan(env)
        self.decision = dec
        self.n_calls += 1
        self.reasons[dec["reason"]] = self.reasons.get(dec["reason"], 0) + 1
        extras = {"text": dec["text"], "reason": dec["reason"], "target_speed": round(dec["target_speed"], 2)}
        if env.action_mode == "control":
            acc, steer = self.tracker.control(wp, float(env.ego.speed), env.dt)
            a = np.array([[np.clip(acc / 5.0, -1, 1), np.clip(-steer / (np.pi / 4), -1, 1)]], np.float32)
            return ActionChunk(a, extras=extras)
        return ActionChunk(wp.reshape(1, -1).astype(np.float32), extras=extras)

    def episode_stats(self) -> dict[str, Any]:
        n = max(self.n_calls, 1)
        return {f"reason_share_{k}": v / n for k, v in sorted(self.reasons.items())}

    # ------------------------------------------------------------------ planning
    def plan(self, env) -> tuple[np.ndarray, dict[str, Any]]:
        ego = env.ego
        scen = env.scenario.name
        v = float(ego.speed)
        v_des = float(ego.target_speed)
        notes: list[tuple[str, str]] = []
        if scen in ("intersection", "roundabout"):
            path = env.route
        else:
            path, lane_note = self._lane_path(env)
            if lane_note:
                notes.append(lane_note)
            if self.want is not None and self.lc is None:
                v_des = self._gap_speed(env, v_des, notes)
        s0, _ = path.project(ego.position, s_hint=self.s_hint, window=20.0)
        self.s_hint = s0
        a_cap, curve = self._curve_cap(path, s0, v, v_des)
        if curve:
            notes.append(("curve", "slowing down for the turn"))
        lead = self._leader(env, path, s0)
        a_idm = self._idm(v, v_des, lead)
        if lead is not None and a_idm < 0.5 and lead[0] < 40:
            notes.append(("follow", f"following the {'obstacle' if lead[2] else 'car'} ahead at {lead[0]:.0f} m"))
        a_top = min(a_idm, a_cap)
        acc, conflict = self._choose(env, path, s0, v, v_des, a_top)
        if conflict is not None:
            notes.insert(0, conflict)
        # comfort: limit the jerk of the plan (nuPlan bound 4.13 m/s^3) except when braking for a conflict
        up, down = JERK_UP * env.dt, (np.inf if conflict is not None else JERK_DOWN * env.dt)
        acc = float(np.clip(acc, self.prev_acc - down, self.prev_acc + up))
        self.prev_acc = acc
        prof = self._profile(v, v_des, acc, PLAN_DT, self.n_wp)
        pts = path.at(s0 + prof)
        wp = world_to_ego(pts, ego.position, float(ego.heading))
        reason, text = self._comment(env, notes, acc, v, v_des)
        return wp, {"reason": reason, "text": text, "target_speed": float(v_des), "acc": float(acc)}

    @staticmethod
    def _profile(v: float, v_des: float, a: float, dt: float, n: int) -> np.ndarray:
        s, out = 0.0, []
        vmax = max(v_des, v) if a <= 0 else v_des
        for _ in range(n):
            v2 = float(np.clip(v + a * dt, 0.0, max(vmax, 0.0)))
            if a > 0 and v > v_des:
                v2 = max(v_des, v + min(a, 0) * dt)
            s += 0.5 * (v + v2) * dt
            v = v2
            out.append(s)
        return np.array(out)

    def _curve_cap(self, path: Path, s0: float, v: float, v_des: float) -> tuple[float, bool]:
        ds = np.arange(2.0, max(10.0, 3.0 * v + 15.0), 2.0)
        h = path.heading(s0 + ds)
        h0 = path.heading(s0 + ds - 2.0)
        kappa = np.abs((h - h0 + np.pi) % (2 * np.pi) - np.pi) / 2.0
        v_curve = np.sqrt(A_LAT_MAX / np.maximum(kappa, 1e-4))
        need = (v_curve ** 2 - v ** 2) / (2 * np.maximum(ds - 2.0, 2.0))
        a = float(np.min(need))
        curve = bool(np.min(v_curve) < min(v, v_des) + 0.5 and a < 0.3)
        return (a if a < 0 else 10.0), curve and a < 0

    def _leader(self, env, path: Path, s0: float):
        ego = env.ego
        best = None
        for o in env.road.vehicles + env.road.objects:
            if o is ego:
                continue
            d = o.position - ego.position
            if d @ d > 80.0 ** 2:
                continue
            so, lat = path.project(o.position, s_hint=s0 + 30.0, window=50.0)
            if so <= s0 + 0.5 or abs(lat) > 2.4:
                continue
            rel_h = abs((o.heading - float(path.heading(so)) + np.pi) % (2 * np.pi) - np.pi)
            if rel_h > np.pi / 3:
                continue
            gap = so - s0 - 0.5 * (ego.LENGTH + o.LENGTH)
            vo = float(getattr(o, "speed", 0.0)) * math.cos(rel_h)
            static = type(o).__name__ == "Obstacle"
            if best is None or gap < best[0]:
                best = (gap, vo, static)
        return best

    @staticmethod
    def _idm(v: float, v_des: float, lead) -> float:
        # free road: proportional approach to the desired speed (IDM's (v/v0)^4 term creeps the last 3 m/s)
        a = float(np.clip(1.0 * (v_des - v), -IDM["b"], IDM["a"]))
        if lead is not None:
            gap, vo, _ = lead
            s_star = IDM["s0"] + max(0.0, v * IDM["T"] + v * (v - vo) / (2 * math.sqrt(IDM["a"] * IDM["b"])))
            a -= IDM["a"] * (s_star / max(gap, 0.1)) ** 2
        return float(a)

    # ---- conflict check against predicted traffic
    def _predictions(self, env, path: Path, s0: float):
        ego = env.ego
        times = np.arange(1, int(PLAN_T / PLAN_DT) + 1) * PLAN_DT
        cents, heads = [], []
        for o in env.road.vehicles + env.road.objects:
            if o is ego:
                continue
            d = o.position - ego.position
            if d @ d > 70.0 ** 2:
                continue
            so, lat = path.project(o.position, s_hint=s0, window=40.0)
            rel_h = abs((o.heading - float(path.heading(so)) + np.pi) % (2 * np.pi) - np.pi)
            if so < s0 - ego.LENGTH and abs(lat) < 1.5 and rel_h < np.pi / 3:
                continue  # a follower in the ego's lane: it is responsible for its gap (not one alongside)
            if type(o).__name__ == "Obstacle":
                P, H = np.repeat(o.position[None], len(times), 0), np.full(len(times), o.heading)
            elif hasattr(o, "route") and (P := self._along_route(env, o, float(o.speed) * times)) is not None:
                P, H = P
                vt = max(float(getattr(o, "target_speed", o.speed)), float(getattr(o.lane, "speed_limit", 0) or 0))
                if env.scenario.name == "intersection" and vt > o.speed + 1.0:
                    # it may be starting off after yielding: add its accelerating (3 m/s^2) future as well
                    vv = np.minimum(o.speed + 3.0 * times, vt)
                    Q = self._along_route(env, o, np.cumsum(vv * PLAN_DT))
                    if Q is not None:
                        cents.append(Q[0])
                        heads.append(Q[1])
            else:
                dv = np.array([math.cos(o.heading), math.sin(o.heading)])
                P = o.position[None] + dv[None] * (o.speed * times)[:, None]
                H = np.full(len(times), o.heading)
            cents.append(P)
            heads.append(H)
        if not cents:
            return None
        C, H = np.stack(cents), np.stack(heads)  # (N,T,2), (N,T)
        D = np.stack([np.cos(H), np.sin(H)], -1)
        return C[:, :, None, :] + DISC_OFFS[None, None, :, None] * D[:, :, None, :]  # (N,T,3,2)

    @staticmethod
    def _along_route(env, o, s_ahead):
        """Positions/headings at arc lengths ``s_ahead`` along the vehicle's planned route (highway-env's
        ``position_heading_along_route``, as in ``predict_trajectory_constant_speed``)."""
        try:  # highway-env keeps the current lane id on the next roads, which can be out of range
            lon = o.lane.local_coordinates(o.position)[0]
            route = o.route or [o.lane_index]
            net = env.road.network
            ph = [net.position_heading_along_route(route, lon + float(x), 0, o.lane_index) for x in s_ahead]
            return np.array([p for p, _ in ph]), np.array([h for _, h in ph])
        except (IndexError, KeyError):
            return None

    def _choose(self, env, path: Path, s0: float, v: float, v_des: float, a_top: float):
        cands = sorted({float(min(a, a_top)) for a in CANDIDATES} | {float(max(min(a_top, 2.0), -6.0))}, reverse=True)
        cands = [a for a in cands if a >= -6.0] or [-6.0]
        others = self._predictions(env, path, s0)
        if others is None:
            return cands[0], None
        T = others.shape[1]
        profs = np.stack([self._profile(v, v_des, a, PLAN_DT, T) for a in cands])  # (A,T)
        S = s0 + profs
        E = path.at(S)  # (A,T,2)
        Hh = path.heading(S)
        Dd = np.stack([np.cos(Hh), np.sin(Hh)], -1)
        Ed = E[:, :, None, :] + DISC_OFFS[None, None, :, None] * Dd[:, :, None, :]  # (A,T,3,2)
        diff = Ed[:, None, :, :, None, :] - others[None, :, :, None, :, :]  # (A,N,T,3,3,2)
        dist = np.sqrt((diff ** 2).sum(-1)).min(axis=(-1, -2))  # (A,N,T)
        clearance = CLEARANCE + (0.6 if env.scenario.name == "roundabout" else 0.0)  # entering at an angle
        hit = (dist < clearance).any(axis=1)  # (A,T)
        first = np.where(hit.any(1), hit.argmax(1), T)
        free = first == T
        if free[0]:
            return cands[0], None
        if free.any():
            a = cands[int(np.argmax(free))]
            kind = "yield"
        else:
            best = first.max()
            idx = [i for i in range(len(cands)) if first[i] == best]
            a = cands[idx[-1]] if v < 3.0 or best > 6 else cands[idx[0]]
            kind = "emergency" if best <= 6 else "yield"
        scen = env.scenario.name
        if kind == "emergency":
            return a, ("emergency", "braking hard: collision risk ahead")
        if scen == "intersection":
            txt = "stopping: waiting for a gap in crossing traffic" if v < 1.0 or a <= -3 else "slowing down: car crossing ahead"
        elif scen == "roundabout":
            txt = "yielding to traffic in the roundabout"
        elif self.lc is not None:
            txt = "adjusting speed to fit into the gap"
        else:
            txt = "slowing down: a car is cutting in"
        return a, ("yield", txt)

    # ---- lane-based path for merge / highway
    def _lane_y(self, env, lane: int, x: np.ndarray) -> np.ndarray:
        if env.scenario.name == "merge" and lane == 2:
            if self._ramp is None:
                net = env.road.network
                pts = [net.get_lane(i).position(s, 0) for i in (("j", "k", 0), ("k", "b", 0), ("b", "c", 2))
                       for s in np.arange(0, net.get_lane(i).length + 0.5, 1.0)]
                pts = np.array(pts)
                order = np.argsort(pts[:, 0])
                self._ramp = pts[order]
            return np.interp(x, self._ramp[:, 0], self._ramp[:, 1])
        return np.full_like(x, 4.0 * lane, dtype=float)

    def _lane_path(self, env) -> tuple[Path, tuple[str, str] | None]:
        ego = env.ego
        x, y = float(ego.position[0]), float(ego.position[1])
        tp = env.instructed
        scen = env.scenario
        note = None
        if self.cur_lane is None:
            self.cur_lane = 2 if scen.name == "merge" else scen.lane_of(y)
        if self.lc is not None and x >= self.lc["x0"] + self.lc["length"]:
            self.cur_lane, self.lc = int(self.lc["to"]), None
        if self.lc is None:
            want = None
            if scen.name == "merge":
                if self.cur_lane == 2 and x >= 232.0:
                    want = 1
                elif self.cur_lane == 1 and tp["lane"] == 0 and x >= 318.0:
                    want = 0
            elif self.cur_lane != tp["lane"] and env.t >= 1.0:
                want = tp["lane"] if abs(tp["lane"] - self.cur_lane) == 1 else self.cur_lane + int(np.sign(tp["lane"] - self.cur_lane))
            self.want = want
            if want is not None:
                side = "left" if want < self.cur_lane else "right"
                if self._gap_ok(env, want):
                    v = float(ego.speed)
                    length = float(np.clip(2.5 * v, 25.0, 45.0))
                    if scen.name == "merge" and self.cur_lane == 2:
                        length = float(np.clip(305.0 - x, 12.0, length))
                    self.lc = {"from": self.cur_lane, "to": want, "x0": x, "length": length}
                elif scen.name == "merge" and self.cur_lane == 2:
                    note = ("wait_gap", "waiting for a gap to merge onto the highway")
                else:
                    note = ("wait_gap", f"waiting for a gap in the {side} lane")
        xs = np.arange(x - 5.0, x + 140.0, 1.0)
        if self.lc is None:
            ys = self._lane_y(env, self.cur_lane, xs)
        else:
            w = np.clip((xs - self.lc["x0"]) / self.lc["length"], 0.0, 1.0)
            w = w * w * (3 - 2 * w)
            ys = (1 - w) * self._lane_y(env, int(self.lc["from"]), xs) + w * self._lane_y(env, int(self.lc["to"]), xs)
            if scen.name == "merge" and self.lc["from"] == 2:
                note = ("merge", "merging into the right lane of the highway")
            else:
                note = ("lane_change", f"changing to the {'left' if self.lc['to'] < self.lc['from'] else 'right'} lane: the gap is free")
        return Path(np.stack([xs, ys], 1)), note

    def _gap_ok(self, env, lane: int) -> bool:
        ego = env.ego
        v = float(ego.speed)
        yl = 4.0 * lane
        for o in env.road.vehicles:
            if o is ego or abs(float(o.position[1]) - yl) > 2.5:
                continue
            dx = float(o.position[0] - ego.position[0])
            vo = float(o.speed)
            if dx >= 0:
                if dx - ego.LENGTH < max(4.0, 0.4 * v) + max(0.0, v - vo) * 1.5:
                    return False
            elif -dx - ego.LENGTH < max(4.0, 0.35 * vo) + max(0.0, vo - v) * 2.0:
                return False
        return True

    def _gap_speed(self, env, v_des: float, notes: list) -> float:
        """Waiting for a lane change: fall in behind (or pull ahead of) the nearest car in the target lane."""
        ego = env.ego
        x = float(ego.position[0])
        if env.scenario.name == "merge" and x < 150.0:
            return v_des
        yl = 4.0 * self.want
        near = [o for o in env.road.vehicles if o is not ego and abs(float(o.position[1]) - yl) <= 2.5
                and -25.0 < float(o.position[0]) - x < 15.0]
        if not near:
            return v_des
        o = min(near, key=lambda o: abs(float(o.position[0]) - x))
        dx = float(o.position[0]) - x
        side = "right" if (self.want > (self.cur_lane or 0) or self.cur_lane == 2) else "left"
        if env.scenario.name == "merge" and self.cur_lane == 2:
            side = "right"
        if dx >= -3.0 and float(o.speed) < min(v_des, float(ego.speed)) - 4.0:
            notes.insert(0, ("wait_gap", f"passing the slower car in the {side} lane before changing lanes"))
            return v_des
        if dx >= -3.0 or (env.scenario.name == "merge" and self.cur_lane == 2):
            notes.insert(0, ("wait_gap", f"slowing down to fall in behind the car in the {side} lane"))
            return max(0.0, min(v_des, float(o.speed) - 4.0))
        notes.insert(0, ("wait_gap", f"speeding up to pass the car behind in the {side} lane"))
        return max(v_des, float(o.speed) + 3.0)

    # ---- commentary
    def _comment(self, env, notes: list, acc: float, v: float, v_des: float) -> tuple[str, str]:
        if notes:
            return notes[0]
        tp = env.instructed
        scen = env.scenario.name
        if acc > 0.5 and v < v_des - 1.0:
            return "accelerate", f"accelerating to {v_des:.0f} m/s"
        if scen == "intersection":
            return "cruise", f"driving on to {tp['turn'].replace('straight', 'go straight')}".replace("to left", "turn left").replace(
                "to right", "turn right") + " at the intersection"
        if scen == "roundabout":
            return "cruise", f"following the roundabout to the {['first', 'second', 'third'][tp['exit'] - 1]} exit"
        if scen == "merge" and self.cur_lane == 2:
            return "cruise", f"driving along the on-ramp towards the merge at {v:.0f} m/s"
        if scen == "highway" and tp.get("speed"):
            return "keep_speed", f"keeping the lane at {tp['speed'] * 3.6:.0f} km/h as instructed"
        return "cruise", f"keeping the {SIDE.get(self.cur_lane, 'current')} lane at {v:.0f} m/s"
