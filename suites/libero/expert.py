"""Privileged scripted expert for LIBERO: reads simulator state, solves the task from its BDDL goal.

Plan: every BDDL goal predicate becomes a primitive — ``(in|on A B)`` -> pick A, place on/in B;
``(open R)`` / ``(close R)`` -> pull / push the drawer that owns region R; ``(turnon S)`` -> press the
stove knob. Primitives are phase machines driven by a P-controller on the end effector (OSC_POSE deltas):

    pick:  hover over the grasp point -> descend (only while the xy error is small) -> close -> lift
    place: carry at a safe height over the target -> lower until the object's bottom is just above the
           target's top -> open -> retreat

Heights come from world AABBs of the objects' collision geoms (``model.geom_aabb`` transformed by the geoms'
poses), not from LIBERO's generic top/bottom offsets. Grasps are top-down; the finger axis is aligned with
the object's short horizontal axis (PCA of its geometry in the xy plane); bowls and mugs are grasped by the
rim. Deterministic (no randomness). Version string in ``EXPERT_VERSION`` is recorded in demonstrations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.interfaces import ActionChunk, Policy, Task

EXPERT_VERSION = "libero-expert-1"

GRIP_OPEN, GRIP_CLOSE = -1.0, 1.0
MAX_OPENING = 0.075  # usable Panda finger opening (m)


# ----------------------------------------------------------------------------------------------------------
# rotations
# ----------------------------------------------------------------------------------------------------------
def quat_xyzw_to_mat(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def mat_to_axisangle(r: np.ndarray) -> np.ndarray:
    cos = np.clip((np.trace(r) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    if angle < 1e-6:
        return np.zeros(3)
    if np.pi - angle < 1e-4:  # near pi: axis from the diagonal
        axis = np.sqrt(np.clip((np.diag(r) + 1) / 2, 0, None))
        i = int(np.argmax(axis))
        for j in range(3):
            if j != i:
                axis[j] = np.copysign(axis[j], r[i, j] + r[j, i])
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]]) / (2 * np.sin(angle))
    return axis * angle


def rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


R_DOWN = np.diag([1.0, -1.0, -1.0])  # gripper pointing down (180 deg about x): the reset orientation


# ----------------------------------------------------------------------------------------------------------
# geometry from the simulator
# ----------------------------------------------------------------------------------------------------------
class Geometry:
    """World-frame geometry queries on a LiberoEnv (``obs["privileged"]["env"]``)."""

    def __init__(self, env: Any):
        self.env = env
        self.sim = env.sim
        self.model = env.sim.model._model
        self.data = env.sim.data._data
        self._geoms: dict[str, np.ndarray] = {}

    def root_body(self, name: str) -> int:
        obj = self.env.inner.get_object(name)
        return self.sim.model.body_name2id(obj.root_body)

    def geoms(self, name: str) -> np.ndarray:
        if name not in self._geoms:
            root = self.root_body(name)
            m = self.model
            # all geoms in the subtree of the object's root body that collide (contype/conaffinity)
            bodies = {root}
            for b in range(m.nbody):
                p = b
                while p > 0:
                    if p == root:
                        bodies.add(b)
                        break
                    p = m.body_parentid[p]
            gs = [g for g in range(m.ngeom) if m.geom_bodyid[g] in bodies
                  and (m.geom_contype[g] or m.geom_conaffinity[g])]
            if not gs:
                gs = [g for g in range(m.ngeom) if m.geom_bodyid[g] in bodies]
            self._geoms[name] = np.asarray(gs, dtype=int)
        return self._geoms[name]

    def points(self, name: str) -> np.ndarray:
        """Corners of every collision geom's local AABB, in world coordinates (N, 3)."""
        pts = []
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        for g in self.geoms(name):
            aabb = self.model.geom_aabb[g]
            local = aabb[:3] + signs * aabb[3:]
            xmat = self.data.geom_xmat[g].reshape(3, 3)
            pts.append(local @ xmat.T + self.data.geom_xpos[g])
        return np.concatenate(pts, axis=0)

    def aabb(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        p = self.points(name)
        return p.min(0), p.max(0)

    def pos(self, name: str) -> np.ndarray:
        return self.data.xpos[self.root_body(name)].copy()

    def site_pos(self, name: str) -> np.ndarray | None:
        m = self.sim.model
        try:
            return self.data.site_xpos[m.site_name2id(name)].copy()
        except Exception:  # noqa: BLE001 — LIBERO prefixes some sites
            for i in range(self.model.nsite):
                sname = m.site_id2name(i) or ""
                if sname.endswith(name) or name in sname:
                    return self.data.site_xpos[i].copy()
        return None

    def horizontal_axes(self, name: str) -> tuple[np.ndarray, float, float]:
        """(unit short axis in xy, extent along short axis, extent along long axis) from xy PCA."""
        p = self.points(name)[:, :2]
        c = p - p.mean(0)
        w, v = np.linalg.eigh(c.T @ c)
        short = v[:, 0]
        long = v[:, 1]
        ext_s = float(np.ptp(c @ short))
        ext_l = float(np.ptp(c @ long))
        return short, ext_s, ext_l

    def joint_qpos(self, joint: str) -> float:
        j = self.sim.model.joint_name2id(joint)
        return float(self.data.qpos[self.model.jnt_qposadr[j]])

    def joint_range(self, joint: str) -> tuple[float, float]:
        j = self.sim.model.joint_name2id(joint)
        return tuple(float(x) for x in self.model.jnt_range[j])  # type: ignore[return-value]

    def joint_body(self, joint: str) -> int:
        return int(self.model.jnt_bodyid[self.sim.model.joint_name2id(joint)])


# ----------------------------------------------------------------------------------------------------------
# primitives
# ----------------------------------------------------------------------------------------------------------
@dataclass
class Primitive:
    kind: str  # "pick_place" | "drawer" | "turnon"
    args: tuple[str, ...]
    phase: str = "start"
    t: int = 0  # steps in the current phase
    mem: dict[str, Any] = field(default_factory=dict)
    done: bool = False


ROUND = ("can", "soup", "sauce", "ketchup", "bottle", "dressing", "milk", "juice", "mug", "cup", "pot", "ramekin")


class LiberoExpert(Policy):
    """Privileged scripted expert. ``obs["privileged"]`` must be present (make_env(privileged=True))."""

    actions_per_call = 1.0
    version = EXPERT_VERSION

    def __init__(self, pos_gain: float = 10.0, rot_gain: float = 2.0):
        self.pos_gain, self.rot_gain = pos_gain, rot_gain
        self.plan: list[Primitive] = []
        self.geo: Geometry | None = None
        self.task: Task | None = None
        self.trace: list[str] = []

    def reset(self, task: Task, seed: int) -> None:
        self.task = task
        self.plan = []
        self.geo = None
        self.trace = []
        self._grip = GRIP_OPEN
        self._steps = 0

    # ----- planning from the BDDL goal -----
    def _make_plan(self, priv: dict) -> list[Primitive]:
        plan: list[Primitive] = []
        goals = [list(g) for g in priv["goal"]]
        # drawers that must be open before something goes in: open first; closing comes last
        opens = [g for g in goals if g[0] == "open"]
        closes = [g for g in goals if g[0] == "close"]
        turnons = [g for g in goals if g[0] == "turnon"]
        places = [g for g in goals if g[0] in ("in", "on")]
        for g in places:
            if g[0] == "in" and self._drawer_joint(g[2]) is not None and not any(o[1] == g[2] for o in opens):
                opens.append(["open", g[2]])
        for g in opens:
            plan.append(Primitive("drawer", (g[1], "open")))
        for g in turnons:
            plan.append(Primitive("turnon", (g[1],)))
        for g in places:
            plan.append(Primitive("pick_place", (g[1], g[2], g[0])))
        for g in closes:
            plan.append(Primitive("drawer", (g[1], "close")))
        return plan

    def _drawer_joint(self, region: str) -> str | None:
        assert self.geo is not None
        names = [self.geo.sim.model.joint_id2name(j) or "" for j in range(self.geo.model.njnt)]
        for level in ("top", "middle", "bottom"):
            if f"_{level}_" in region or region.endswith(f"_{level}"):
                base = region.split(f"_{level}")[0]
                for n in names:
                    if n.startswith(base) and level in n:
                        return n
        if "microwave" in region:
            for n in names:
                if n.startswith(region.split("_heating")[0]) and "door" in n.lower():
                    return n
        return None

    # ----- control -----
    def _move(self, priv: dict, target: np.ndarray, yaw: float = 0.0, grip: float | None = None,
              max_speed: float = 1.0) -> tuple[np.ndarray, float, float]:
        eef = priv["eef_pos"]
        err = target - eef
        a = np.zeros(7)
        v = err * self.pos_gain
        n = np.linalg.norm(v)
        if n > max_speed:
            v = v / n * max_speed
        a[:3] = v
        r_cur = quat_xyzw_to_mat(priv["eef_quat_xyzw"])
        r_des = rot_z(yaw) @ R_DOWN
        rot_err = mat_to_axisangle(r_des @ r_cur.T)
        a[3:6] = np.clip(rot_err * self.rot_gain, -1, 1)
        if grip is not None:
            self._grip = grip
        a[6] = self._grip
        return a, float(np.linalg.norm(err)), float(np.linalg.norm(rot_err))

    @staticmethod
    def _yaw_for_axis(u: np.ndarray) -> float:
        """Yaw that puts the finger (closing) axis along horizontal unit vector ``u``; in [-pi/2, pi/2]."""
        yaw = float(np.arctan2(u[0], -u[1]))
        while yaw > np.pi / 2:
            yaw -= np.pi
        while yaw < -np.pi / 2:
            yaw += np.pi
        return yaw

    def _grasp_spec(self, obj: str, priv: dict) -> dict[str, Any]:
        g = self.geo
        assert g is not None
        lo, hi = g.aabb(obj)
        centre = (lo + hi) / 2
        height = hi[2] - lo[2]
        short, ext_s, ext_l = g.horizontal_axes(obj)
        name = obj.lower()
        eef = priv["eef_pos"]
        if "bowl" in name or "mug" in name or ext_s > MAX_OPENING:
            # rim grasp on the side facing the robot's current position
            d = eef[:2] - centre[:2]
            d = d / (np.linalg.norm(d) + 1e-9) if np.linalg.norm(d) > 1e-3 else np.array([-1.0, 0.0])
            radius = min(hi[0] - lo[0], hi[1] - lo[1]) / 2
            point = centre.copy()
            point[:2] = centre[:2] + d * max(radius - 0.015, 0.0)
            point[2] = hi[2] - min(0.025, height * 0.4)
            yaw = self._yaw_for_axis(d)
            kind = "rim"
        else:
            point = centre.copy()
            depth = min(0.03, max(0.012, height * 0.4))
            point[2] = hi[2] - depth
            if any(k in name for k in ROUND) or ext_l - ext_s < 0.01:
                yaw = 0.0
            else:
                yaw = self._yaw_for_axis(short)
            kind = "top"
        return {"point": point, "yaw": yaw, "kind": kind, "bottom": lo[2], "top": hi[2]}

    def _place_spec(self, target: str, obj: str, mode: str) -> dict[str, Any]:
        g = self.geo
        assert g is not None
        inner = g.env.inner
        if target in inner.objects_dict or target in inner.fixtures_dict:
            lo, hi = g.aabb(target)
            # LIBERO's On(a, b): contact, a above b, and |xy(a) - xy(b)| < 3 cm between *body origins*
            xy = g.pos(target)[:2] if mode == "on" else (lo[:2] + hi[:2]) / 2
            surface = hi[2] if mode == "on" else lo[2] + (hi[2] - lo[2]) * 0.5
            top = hi[2]
        else:
            site = g.site_pos(target)
            if site is None:
                raise ValueError(f"expert: cannot locate place target {target!r}")
            xy = site[:2]
            owner = None
            for o in list(inner.objects_dict) + list(inner.fixtures_dict):
                if target.startswith(o):
                    owner = o
            if owner is not None and mode == "in":
                lo, hi = g.aabb(owner)
                surface, top = hi[2] - 0.01, hi[2]
            else:
                surface, top = site[2], site[2]
        return {"xy": np.asarray(xy, dtype=float), "surface": float(surface), "top": float(top)}

    def infer(self, obs: dict) -> ActionChunk:
        priv = obs.get("privileged")
        if priv is None:
            raise ValueError("LiberoExpert needs obs['privileged'] (make_env(privileged=True))")
        if self.geo is None or self.geo.env is not priv["env"]:
            self.geo = Geometry(priv["env"])
        if not self.plan:
            self.plan = self._make_plan(priv)
        self._steps += 1
        prim = next((p for p in self.plan if not p.done), None)
        if prim is None:
            a, _, _ = self._move(priv, priv["eef_pos"], grip=GRIP_OPEN)
            a[:6] = 0
            return ActionChunk(a[None].astype(np.float32))
        if prim.kind == "pick_place":
            a = self._pick_place(prim, priv)
        elif prim.kind == "drawer":
            a = self._drawer(prim, priv)
        else:
            a = self._turnon(prim, priv)
        prim.t += 1
        return ActionChunk(np.clip(a, -1, 1)[None].astype(np.float32))

    def _goto(self, prim: Primitive, phase: str) -> None:
        self.trace.append(f"{self._steps}:{prim.kind}:{phase}")
        prim.phase, prim.t = phase, 0

    # ----- pick and place -----
    def _pick_place(self, prim: Primitive, priv: dict) -> np.ndarray:
        obj, target, mode = prim.args
        g = self.geo
        assert g is not None
        m = prim.mem
        eef = priv["eef_pos"]
        if prim.phase == "start":
            m["grasp"] = self._grasp_spec(obj, priv)
            self._goto(prim, "hover")
        gs = m["grasp"]
        if prim.phase in ("hover", "descend"):  # track the object while approaching
            gs = m["grasp"] = self._grasp_spec(obj, priv) if prim.t % 5 == 0 else gs
        if prim.phase == "hover":
            tgt = gs["point"] + np.array([0, 0, 0.08])
            tgt[2] = max(tgt[2], eef[2] - 0.02) if np.linalg.norm(eef[:2] - tgt[:2]) > 0.05 else tgt[2]
            a, err, rerr = self._move(priv, tgt, gs["yaw"], GRIP_OPEN)
            if (np.linalg.norm(eef[:2] - gs["point"][:2]) < 0.01 and abs(eef[2] - tgt[2]) < 0.03 and rerr < 0.08) \
                    or prim.t > 120:
                self._goto(prim, "descend")
            return a
        if prim.phase == "descend":
            goal = gs["point"]
            tgt = goal.copy()
            xy_err = float(np.linalg.norm(eef[:2] - goal[:2]))
            if xy_err > 0.006:  # re-centre before going lower
                tgt[2] = max(goal[2], eef[2])
            a, _, _ = self._move(priv, tgt, gs["yaw"], GRIP_OPEN, max_speed=0.6)
            err = float(np.linalg.norm(goal - eef))
            zs = m.setdefault("z_hist", [])
            zs.append(eef[2])
            stalled = len(zs) > 10 and abs(zs[-10] - eef[2]) < 0.002 and xy_err < 0.01 and eef[2] - goal[2] < 0.03
            if err < 0.008 or stalled or prim.t > 80:
                m.pop("z_hist", None)
                self._goto(prim, "close")
            return a
        if prim.phase == "close":
            a, _, _ = self._move(priv, gs["point"], gs["yaw"], GRIP_CLOSE, max_speed=0.3)
            a[:3] *= 0.3
            if prim.t >= 12:
                lo, _ = g.aabb(obj)
                m["bottom_offset"] = eef[2] - lo[2]
                m["lift_from"] = eef.copy()
                self._goto(prim, "lift")
            return a
        if prim.phase == "lift":
            place = m.setdefault("place", self._place_spec(target, obj, mode))
            clear = max(place["top"] + m["bottom_offset"] + 0.06, m["lift_from"][2] + 0.1)
            m["carry_z"] = clear
            tgt = np.array([m["lift_from"][0], m["lift_from"][1], clear])
            a, err, _ = self._move(priv, tgt, gs["yaw"], GRIP_CLOSE, max_speed=0.8)
            if abs(eef[2] - clear) < 0.02 or prim.t > 60:
                lo, hi = g.aabb(obj)
                lifted = lo[2] > gs["bottom"] + 0.03 and priv["gripper_qpos"][0] - priv["gripper_qpos"][1] > 0.004
                if not lifted and m.get("retries", 0) < 2:  # the grasp missed: open and try again
                    m["retries"] = m.get("retries", 0) + 1
                    self.trace.append(f"{self._steps}:regrasp")
                    m["grasp"] = self._grasp_spec(obj, priv)
                    self._goto(prim, "reopen")
                    return a
                m["offset"] = eef[:2] - g.pos(obj)[:2]  # gripper relative to the held object's origin
                self._goto(prim, "carry")
            return a
        if prim.phase == "reopen":
            a, _, _ = self._move(priv, eef, gs["yaw"], GRIP_OPEN)
            a[:3] = 0
            if prim.t >= 8:
                m["grasp"] = self._grasp_spec(obj, priv)
                self._goto(prim, "hover")
            return a
        if prim.phase == "carry":
            place = m["place"] = self._place_spec(target, obj, mode)
            tgt = np.array([*(place["xy"] + m["offset"]), m["carry_z"]])
            a, err, _ = self._move(priv, tgt, gs["yaw"], GRIP_CLOSE)
            if np.linalg.norm(eef[:2] - tgt[:2]) < 0.01 or prim.t > 150:
                m["drop_xy"] = tgt[:2]
                self._goto(prim, "lower")
            return a
        if prim.phase == "lower":
            place = m["place"]
            z = place["surface"] + m["bottom_offset"] + (0.008 if mode == "on" else 0.03)
            tgt = np.array([*m["drop_xy"], max(z, place["surface"] + 0.01)])
            a, err, _ = self._move(priv, tgt, gs["yaw"], GRIP_CLOSE, max_speed=0.5)
            zs = m.setdefault("lower_z", [])
            zs.append(eef[2])
            stalled = len(zs) > 6 and abs(zs[-6] - eef[2]) < 0.002
            if err < 0.006 or stalled or prim.t > 60:
                self._goto(prim, "release")
            return a
        if prim.phase == "release":
            a, _, _ = self._move(priv, eef, gs["yaw"], GRIP_OPEN)
            a[:3] = 0
            if prim.t >= 10:
                self._goto(prim, "retreat")
            return a
        if prim.phase == "retreat":
            tgt = eef.copy()
            tgt[2] = m["carry_z"]
            a, err, _ = self._move(priv, tgt, gs["yaw"], GRIP_OPEN, max_speed=0.6)
            if abs(eef[2] - m["carry_z"]) < 0.02 or prim.t > 30:
                prim.done = True
                self._goto(prim, "done")
            return a
        raise RuntimeError(f"expert: unknown phase {prim.phase!r}")

    # ----- drawers -----
    def _world_box(self, geom: int) -> np.ndarray:
        g = self.geo
        assert g is not None
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        aabb = g.model.geom_aabb[geom]
        return (aabb[:3] + signs * aabb[3:]) @ g.data.geom_xmat[geom].reshape(3, 3).T + g.data.geom_xpos[geom]

    def _drawer(self, prim: Primitive, priv: dict) -> np.ndarray:
        """Grasp the drawer's handle from above (fingers closing across it), pull it open along the slide;
        close = push the front back with closed fingers."""
        region, want = prim.args
        g = self.geo
        assert g is not None
        m = prim.mem
        eef = priv["eef_pos"]
        joint = m.get("joint") or self._drawer_joint(region)
        if joint is None:
            prim.done = True
            return self._move(priv, eef, 0.0, GRIP_OPEN)[0]
        m["joint"] = joint
        q = g.joint_qpos(joint)
        lo_q, hi_q = g.joint_range(joint)
        body = g.joint_body(joint)
        jid = g.sim.model.joint_name2id(joint)
        axis_w = g.data.xmat[body].reshape(3, 3) @ g.model.jnt_axis[jid]
        q_open = lo_q if abs(lo_q) > abs(hi_q) else hi_q  # closed is q = 0; open is the far end of the range
        pull = axis_w * np.sign(q_open)  # world direction in which the drawer opens
        geoms = [i for i in range(g.model.ngeom) if g.model.geom_bodyid[i] == body
                 and (g.model.geom_contype[i] or g.model.geom_conaffinity[i])]
        centres = np.array([g.data.geom_xpos[i] for i in geoms])
        handle_geom = geoms[int(np.argmax(centres @ pull))]
        box = self._world_box(handle_geom)
        handle = box.mean(0)
        handle_top = box[:, 2].max()
        opened = q / q_open if q_open else 0.0
        # LIBERO drawer handles are horizontal bars: fingers close across the bar, i.e. along the pull direction;
        # the grasp centre sits slightly in front of the bar so the rear finger clears the drawer's face
        yaw = self._yaw_for_axis(pull)
        handle = handle + pull * 0.012
        if prim.phase == "start":
            self._goto(prim, "hover")
        if want == "open":
            if prim.phase == "hover":
                tgt = np.array([handle[0], handle[1], handle_top + 0.08])
                a, err, rerr = self._move(priv, tgt, yaw, GRIP_OPEN)
                if (np.linalg.norm(eef[:2] - tgt[:2]) < 0.01 and abs(eef[2] - tgt[2]) < 0.03 and rerr < 0.1) \
                        or prim.t > 120:
                    self._goto(prim, "descend")
                return a
            if prim.phase == "descend":
                tgt = np.array([handle[0], handle[1], handle_top - 0.022])
                a, err, _ = self._move(priv, tgt, yaw, GRIP_OPEN, max_speed=0.5)
                zs = m.setdefault("z_hist", [])
                zs.append(eef[2])
                if err < 0.008 or (len(zs) > 10 and abs(zs[-10] - eef[2]) < 0.002) or prim.t > 60:
                    self._goto(prim, "grab")
                return a
            if prim.phase == "grab":
                a, _, _ = self._move(priv, eef, yaw, GRIP_CLOSE)
                a[:3] = 0
                if prim.t >= 12:
                    m["pull_from"] = eef.copy()
                    self._goto(prim, "pull")
                return a
            if prim.phase == "pull":
                tgt = m["pull_from"] + pull * (abs(q_open) * 0.95)
                a, err, _ = self._move(priv, tgt, yaw, GRIP_CLOSE, max_speed=0.5)
                if opened > 0.9 or err < 0.01 or prim.t > 80:
                    self._goto(prim, "let_go")
                return a
            if prim.phase == "let_go":
                a, _, _ = self._move(priv, eef, yaw, GRIP_OPEN)
                a[:3] = 0
                if prim.t >= 8:
                    self._goto(prim, "back")
                return a
            if prim.phase == "back":
                a, _, _ = self._move(priv, eef + np.array([0, 0, 0.05]), yaw, GRIP_OPEN)
                if prim.t >= 12:
                    prim.done = True
                return a
        else:  # close: push the drawer's front back with closed fingers
            start = handle.copy()
            start[:2] = handle[:2] + pull[:2] * 0.05
            start[2] = handle[2] - 0.01
            if prim.phase == "hover":
                tgt = np.array([start[0], start[1], max(handle_top + 0.08, eef[2])])
                a, err, _ = self._move(priv, tgt, yaw, GRIP_CLOSE)
                if np.linalg.norm(eef[:2] - tgt[:2]) < 0.012 or prim.t > 120:
                    self._goto(prim, "descend")
                return a
            if prim.phase == "descend":
                a, err, _ = self._move(priv, start, yaw, GRIP_CLOSE, max_speed=0.5)
                if err < 0.012 or prim.t > 60:
                    self._goto(prim, "push")
                return a
            if prim.phase == "push":
                tgt = eef - pull * 0.05
                tgt[2] = start[2]
                a, _, _ = self._move(priv, tgt, yaw, GRIP_CLOSE, max_speed=0.6)
                if abs(opened) < 0.03 or prim.t > 80:
                    self._goto(prim, "back")
                return a
            if prim.phase == "back":
                a, _, _ = self._move(priv, eef + pull * 0.04 + np.array([0, 0, 0.06]), yaw, GRIP_OPEN)
                if prim.t >= 12:
                    prim.done = True
                return a
        raise RuntimeError(f"expert: unknown drawer phase {prim.phase!r}")

    # ----- stove knob -----
    def _turnon(self, prim: Primitive, priv: dict) -> np.ndarray:
        """Grasp the knob's fin from above and turn it (yaw) until the joint is in its turn-on range."""
        (fixture,) = prim.args
        g = self.geo
        assert g is not None
        m = prim.mem
        eef = priv["eef_pos"]
        names = [g.sim.model.joint_id2name(j) or "" for j in range(g.model.njnt)]
        joint = next((n for n in names if n.startswith(fixture) and "button" in n), None)
        if joint is None:
            prim.done = True
            return self._move(priv, eef, 0.0, GRIP_OPEN)[0]
        body = g.joint_body(joint)
        q = g.joint_qpos(joint)
        geoms = [i for i in range(g.model.ngeom) if g.model.geom_bodyid[i] == body
                 and (g.model.geom_contype[i] or g.model.geom_conaffinity[i])]
        pts = np.concatenate([self._world_box(i) for i in geoms])
        knob = pts.mean(0)
        top = pts[:, 2].max()
        if "yaw0" not in m:
            c = pts[:, :2] - pts[:, :2].mean(0)
            w, v = np.linalg.eigh(c.T @ c)
            m["yaw0"] = self._yaw_for_axis(v[:, 0])  # fingers close across the fin (its thin axis)
            m["q0"] = q
        yaw0 = m["yaw0"]
        if prim.phase == "start":
            self._goto(prim, "hover")
        if prim.phase == "hover":
            tgt = np.array([knob[0], knob[1], top + 0.07])
            a, err, rerr = self._move(priv, tgt, yaw0, GRIP_OPEN)
            if (err < 0.012 and rerr < 0.08) or prim.t > 120:
                self._goto(prim, "descend")
            return a
        if prim.phase == "descend":
            tgt = np.array([knob[0], knob[1], top - 0.018])
            a, err, _ = self._move(priv, tgt, yaw0, GRIP_OPEN, max_speed=0.4)
            zs = m.setdefault("z_hist", [])
            zs.append(eef[2])
            if err < 0.006 or (len(zs) > 10 and abs(zs[-10] - eef[2]) < 0.002) or prim.t > 60:
                self._goto(prim, "grab")
            return a
        if prim.phase == "grab":
            a, _, _ = self._move(priv, eef, yaw0, GRIP_CLOSE)
            a[:3] = 0
            if prim.t >= 10:
                self._goto(prim, "turn")
            return a
        if prim.phase == "turn":
            tgt = np.array([knob[0], knob[1], eef[2]])
            a, _, _ = self._move(priv, tgt, yaw0 + 1.2, GRIP_CLOSE, max_speed=0.3)
            state = g.env.inner.object_states_dict.get(fixture)
            on = bool(state.turn_on()) if state is not None and hasattr(state, "turn_on") else q > 0.6
            if on or q > 0.9 or prim.t > 60:
                self._goto(prim, "release")
            return a
        if prim.phase == "release":
            a, _, _ = self._move(priv, eef, yaw0 + 1.2, GRIP_OPEN)
            a[:3] = 0
            if prim.t >= 8:
                self._goto(prim, "up")
            return a
        if prim.phase == "up":
            a, _, _ = self._move(priv, np.array([eef[0], eef[1], top + 0.1]), yaw0 + 1.2, GRIP_OPEN)
            if prim.t > 12:
                prim.done = True
            return a
        raise RuntimeError(f"expert: unknown knob phase {prim.phase!r}")

    def episode_stats(self) -> dict[str, Any]:
        done = sum(p.done for p in self.plan)
        return {"primitives_done": done, "primitives": len(self.plan)}
