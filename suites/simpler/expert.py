"""Privileged scripted expert for both SIMPLER tiers (reads ``obs["privileged"]``: TCP, object and goal poses).

A state machine per task kind that emits end-effector deltas:

* pick: above the cube (yaw aligned to a cube face) -> descend -> close -> lift.
* stack: pick the top cube -> carry above the bottom cube -> lower until it rests 2 mm above -> release -> retreat.
* push / pull: stand behind the cube on the cube->goal line (pull: on the far side), then drive the cube along that
  line with lateral correction (gripper closed).
* place_sphere: pick the sphere -> carry above the bin -> lower -> release -> retreat.
* lift_peg: grasp the peg near one end with a loose grip, lift high so it swings vertical about the fingers,
  lower it onto the table, release.
* bridge (WidowX, untested here: the assets are absent): pick the source object -> carry above the target ->
  lower -> release; raw metre deltas at 5 Hz.

Deterministic (no randomness); ``noise`` (DART-style, for demonstrations) perturbs executed actions only through
``suites/simpler/demos.py``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from harness.interfaces import ActionChunk, Policy, Task

OPEN, CLOSED = 1.0, -1.0


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / max(np.linalg.norm(q), 1e-12)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def wrap(a: float, period: float) -> float:
    """``a`` wrapped into [-period/2, period/2)."""
    return (a + period / 2) % period - period / 2


class SimplerExpert(Policy):
    actions_per_call = 1.0

    def __init__(self, pos_scale: float = 0.1, rot_scale: float = 0.1, gain: float = 1.0):
        self.pos_scale, self.rot_scale, self.gain = pos_scale, rot_scale, gain
        self.task: Task | None = None
        self.stage = 0
        self.t = 0
        self.t_stage = 0
        self.memo: dict[str, Any] = {}

    def reset(self, task: Task, seed: int) -> None:
        self.task, self.stage, self.t, self.t_stage, self.memo = task, 0, 0, 0, {}

    # ----- helpers -----
    def _goto(self, p: np.ndarray, goal: np.ndarray, yaw_err: float = 0.0, grip: float = OPEN,
              max_norm: float = 1.0) -> np.ndarray:
        d = (np.asarray(goal) - np.asarray(p)) / self.pos_scale * self.gain
        n = np.linalg.norm(d)
        if n > max_norm:
            d = d * (max_norm / n)
        a = np.zeros(7)
        a[:3] = np.clip(d, -1, 1)
        a[5] = np.clip(-yaw_err / self.rot_scale, -1, 1)  # drz > 0 turns the closing axis clockwise here
        a[6] = grip
        return a

    def _next(self, stage: int | None = None) -> None:
        self.stage = self.stage + 1 if stage is None else stage
        self.t_stage = 0

    @staticmethod
    def _yaw_err(tcp_q: np.ndarray, obj_q: np.ndarray | None, period: float = np.pi / 2) -> float:
        """Rotation about world z that aligns the gripper's closing axis with a face normal of the object."""
        if obj_q is None:
            return 0.0
        closing = quat_to_mat(tcp_q)[:, 1]
        face = quat_to_mat(obj_q)[:, 0]
        return wrap(np.arctan2(face[1], face[0]) - np.arctan2(closing[1], closing[0]), period)

    # ----- the policy -----
    def infer(self, obs: dict) -> ActionChunk:
        st = obs["privileged"]
        fn = getattr(self, f"_{st['kind']}" if st["tier"] == "tabletop" else "_bridge")
        a = fn(st)
        self.t += 1
        self.t_stage += 1
        return ActionChunk(np.asarray(a, dtype=np.float32)[None])

    def episode_stats(self) -> dict[str, Any]:
        return {"final_stage": self.stage}

    # ----- pick (also the first half of stack and place) -----
    def _grasp(self, st: dict, obj_q: np.ndarray | None, grasp_z: float, after: int, grip_close: float = CLOSED,
               hover: float = 0.08, xy_offset: np.ndarray | None = None, period: float = np.pi / 2
               ) -> np.ndarray | None:
        """Stages 0-2: hover over, descend, close. Returns an action, or None once the grasp is done (stage=after)."""
        p, q = st["tcp_pose"][:3], st["tcp_pose"][3:]
        obj = st["target_pose"][:3] + (0 if xy_offset is None else np.r_[xy_offset, 0.0])
        yaw = self._yaw_err(q, obj_q, period)
        if self.stage == 0:  # hover above, aligned
            goal = np.r_[obj[:2], grasp_z + hover]
            if (np.linalg.norm(goal[:2] - p[:2]) < 0.008 and abs(goal[2] - p[2]) < 0.02 and abs(yaw) < 0.15) \
                    or self.t_stage > 40:
                self._next()
            return self._goto(p, goal, yaw, OPEN)
        if self.stage == 1:  # descend
            goal = np.r_[obj[:2], grasp_z]
            if np.linalg.norm(goal - p) < 0.006 or self.t_stage > 30:
                self._next()
            return self._goto(p, goal, yaw, OPEN)
        if self.stage == 2:  # close, holding still
            if self.t_stage >= 6:
                self._next(after)
            return self._goto(p, np.r_[obj[:2], grasp_z], 0.0, grip_close)
        return None

    def _pick(self, st: dict) -> np.ndarray:
        h = st["half_size"]
        a = self._grasp(st, st["target_pose"][3:], st["target_pose"][2], after=3)
        if a is not None:
            return a
        p = st["tcp_pose"][:3]
        if not st["grasped"] and self.t_stage > 8:  # lost it: start over
            self._next(0)
        return self._goto(p, np.r_[p[:2], h + 0.15], 0.0, CLOSED)

    # ----- stack -----
    def _stack(self, st: dict) -> np.ndarray:
        h = st["half_size"]
        a = self._grasp(st, st["target_pose"][3:], st["target_pose"][2], after=3)
        if a is not None:
            return a
        p = st["tcp_pose"][:3]
        cube, base = st["target_pose"][:3], st["goal_pose"][:3]
        grip_offset = p - cube  # tcp relative to the held cube
        carry_z = base[2] + 2 * h + 0.05
        if self.stage == 3:  # lift
            if not st["grasped"] and self.t_stage > 8:
                self._next(0)
            if cube[2] > carry_z - 0.01:
                self._next()
            return self._goto(p, np.r_[p[:2], carry_z + grip_offset[2] + 0.01], 0.0, CLOSED)
        if self.stage == 4:  # carry above the base cube
            goal = np.r_[base[:2], carry_z] + grip_offset
            if np.linalg.norm(cube[:2] - base[:2]) < 0.004 or self.t_stage > 40:
                self._next()
            if not st["grasped"]:
                self._next(0)
            return self._goto(p, goal, 0.0, CLOSED)
        if self.stage == 5:  # lower until resting 2 mm above
            goal = np.r_[base[:2], base[2] + 2 * h + 0.002] + grip_offset
            if abs(cube[2] - (base[2] + 2 * h + 0.002)) < 0.003 or self.t_stage > 30:
                self._next()
            return self._goto(p, goal, 0.0, CLOSED, max_norm=0.3)
        if self.stage == 6:  # release
            if self.t_stage >= 5:
                self._next()
            return self._goto(p, p, 0.0, OPEN)
        return self._goto(p, np.r_[p[:2], base[2] + 2 * h + 0.08], 0.0, OPEN, max_norm=0.4)  # retreat

    # ----- push / pull -----
    def _push(self, st: dict) -> np.ndarray:
        p = st["tcp_pose"][:3]
        h = st["half_size"]
        cube, goal = st["target_pose"][:3], st["goal_pose"][:3]
        d = goal[:2] - cube[:2]
        dist = np.linalg.norm(d)
        d = d / max(dist, 1e-9)
        behind = cube[:2] - d * (h + 0.025)
        low = h * 0.8
        if self.stage == 0:  # above the standing point
            g = np.r_[behind, 0.10]
            if np.linalg.norm(g - p) < 0.01 or self.t_stage > 40:
                self._next()
            return self._goto(p, g, 0.0, CLOSED)
        if self.stage == 1:  # down beside the cube
            g = np.r_[behind, low]
            if np.linalg.norm(g - p) < 0.006 or self.t_stage > 30:
                self._next()
            return self._goto(p, g, 0.0, CLOSED)
        # drive along the cube->goal line, correcting sideways drift of the contact point
        lateral = np.array([-d[1], d[0]])
        off = float(np.dot(p[:2] - cube[:2], lateral))
        if np.linalg.norm(p[:2] - cube[:2]) > h + 0.06:  # lost contact: stand behind it again
            self._next(0)
        target = p[:2] + d * 0.1 - lateral * off
        return self._goto(p, np.r_[target, low], 0.0, CLOSED, max_norm=1.0)

    _pull = _push

    # ----- place sphere into the bin -----
    def _place_sphere(self, st: dict) -> np.ndarray:
        r = st["radius"]
        a = self._grasp(st, None, st["target_pose"][2], after=3)
        if a is not None:
            return a
        p = st["tcp_pose"][:3]
        ball, bin_ = st["target_pose"][:3], st["goal_pose"][:3]
        off = p - ball
        carry_z = 0.09
        rest_z = bin_[2] + 0.0025 + r + 0.004  # sphere centre just above the bin floor
        if self.stage == 3:  # lift
            if not st["grasped"] and self.t_stage > 8:
                self._next(0)
            if ball[2] > carry_z - 0.01:
                self._next()
            return self._goto(p, np.r_[p[:2], carry_z + off[2] + 0.01], 0.0, CLOSED)
        if self.stage == 4:  # above the bin
            if np.linalg.norm(ball[:2] - bin_[:2]) < 0.003 or self.t_stage > 40:
                self._next()
            if not st["grasped"]:
                self._next(0)
            return self._goto(p, np.r_[bin_[:2], carry_z] + off, 0.0, CLOSED)
        if self.stage == 5:  # lower
            if abs(ball[2] - rest_z) < 0.003 or self.t_stage > 30:
                self._next()
            return self._goto(p, np.r_[bin_[:2], rest_z] + off, 0.0, CLOSED, max_norm=0.3)
        if self.stage == 6:  # release
            if self.t_stage >= 5:
                self._next()
            return self._goto(p, p, 0.0, OPEN)
        return self._goto(p, np.r_[p[:2], 0.12], 0.0, OPEN, max_norm=0.4)

    # ----- lift the peg upright -----
    WORK_XY = np.array([-0.08, 0.0])
    PEG_GRASP_OFFSET = 0.06  # grasp this far from the peg's centre, on the end that turns upwards
    PEG_LOOSE = 0.3  # gripper command that lets the peg swing about the fingers (0.15: 0/12, 0.5: drops it)

    def _lift_peg(self, st: dict) -> np.ndarray:
        """Grasp the peg off-centre, lift, turn the wrist about the closing axis as far as the arm allows
        (~55 deg), loosen the grip so gravity swings the long side down to vertical, lower it onto the table,
        release, back off."""
        p, q = st["tcp_pose"][:3], st["tcp_pose"][3:]
        L = st["peg_half_length"]
        peg, peg_q = st["target_pose"][:3], st["target_pose"][3:]
        axis = quat_to_mat(peg_q)[:, 0]  # the peg's long axis
        R = quat_to_mat(q)
        if self.stage <= 2:
            across = np.cross([0, 0, 1.0], axis)  # close the fingers across the peg
            if "offset" not in self.memo and self.stage == 1:
                # +rotation about body y lifts the body +x end: grasp on that side of the centre
                xb = R[:2, 0] / max(np.linalg.norm(R[:2, 0]), 1e-9)
                ax = axis[:2] / max(np.linalg.norm(axis[:2]), 1e-9)
                self.memo["offset"] = ax * np.sign(np.dot(ax, xb) or 1.0) * self.PEG_GRASP_OFFSET
            a = self._grasp(st, _yaw_quat(np.arctan2(across[1], across[0])), peg[2], after=3, hover=0.06,
                            period=np.pi, xy_offset=self.memo.get("offset"))
            if a is not None:
                return a
        lift_z = L + 0.10
        if self.stage == 3:  # lift and move to where the wrist has room to turn
            if not st["grasped"] and self.t_stage > 8:
                self._next(0)
            goal = np.r_[self.WORK_XY, lift_z]
            if np.linalg.norm(goal - p) < 0.01 or self.t_stage > 30:
                self._next()
            return self._goto(p, goal, 0.0, CLOSED)
        if self.stage == 4:  # turn about the closing axis (body y)
            if abs(axis[2]) > 0.8 or self.t_stage > 40:
                self._next()
            s = 1.0 if R[0, 0] >= 0 else -1.0
            a = self._goto(p, np.r_[self.WORK_XY, lift_z], 0.0, CLOSED)
            a[4] = s
            return a
        if self.stage == 5:  # loosen: the long side swings down
            if (abs(axis[2]) > 0.998 and self.t_stage > 3) or self.t_stage > 25:
                self._next()
            return self._goto(p, np.r_[self.WORK_XY, lift_z], 0.0, self.PEG_LOOSE)
        if self.stage == 6:  # lower until the peg stands on the table
            if peg[2] - L < 0.003 or self.t_stage > 40:
                self._next()
            return self._goto(p, np.r_[p[:2], p[2] - (peg[2] - L) - 0.002], 0.0, self.PEG_LOOSE, max_norm=0.3)
        if self.stage == 7:  # release
            if self.t_stage >= 4:
                self._next()
            return self._goto(p, p, 0.0, OPEN)
        back = p - 0.04 * R[:, 2]  # back off along the approach direction
        return self._goto(p, back, 0.0, OPEN, max_norm=0.3)

    # ----- bridge (WidowX, raw metre / radian deltas at 5 Hz) -----
    def _bridge(self, st: dict) -> np.ndarray:
        p = st["tcp_pose"][:3]
        src, tgt = st["target_pose"][:3], st["goal_pose"][:3]
        src_h = float(abs(st["target_bbox"][2])) / 2
        tgt_h = float(abs(st["goal_bbox"][2])) / 2
        step = 0.03  # metres per 0.2 s step

        def go(goal: np.ndarray, grip: float) -> np.ndarray:
            d = np.asarray(goal) - p
            n = np.linalg.norm(d)
            a = np.zeros(7)
            a[:3] = d if n <= step else d * (step / n)
            a[6] = grip
            return a

        grasp = np.r_[src[:2], src[2]]
        if self.stage == 0:
            g = grasp + [0, 0, 0.08]
            if np.linalg.norm(g - p) < 0.01 or self.t_stage > 15:
                self._next()
            return go(g, OPEN)
        if self.stage == 1:
            if np.linalg.norm(grasp - p) < 0.008 or self.t_stage > 10:
                self._next()
            return go(grasp, OPEN)
        if self.stage == 2:
            if self.t_stage >= 3:
                self._next()
            return go(grasp, CLOSED)
        if self.stage == 3:
            g = np.r_[p[:2], tgt[2] + tgt_h + src_h + 0.10]
            if p[2] > g[2] - 0.01 or self.t_stage > 10:
                self._next()
            return go(g, CLOSED)
        off = p - src
        if self.stage == 4:
            g = np.r_[tgt[:2], tgt[2] + tgt_h + src_h + 0.10] + [off[0], off[1], 0]
            if np.linalg.norm(src[:2] - tgt[:2]) < 0.01 or self.t_stage > 15:
                self._next()
            return go(g, CLOSED)
        if self.stage == 5:
            g = np.r_[p[:2], p[2] - (src[2] - (tgt[2] + tgt_h + src_h + 0.01))]
            if src[2] < tgt[2] + tgt_h + src_h + 0.015 or self.t_stage > 10:
                self._next()
            return go(g, CLOSED)
        if self.stage == 6:  # release
            if self.t_stage >= 3:
                self._next()
            return go(p, OPEN)
        return go(p + np.array([0.0, 0.0, 0.02]), OPEN)  # retreat upwards


def _yaw_quat(yaw: float) -> np.ndarray:
    """wxyz quaternion of a rotation by ``yaw`` about z (its x axis points at angle ``yaw``)."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
