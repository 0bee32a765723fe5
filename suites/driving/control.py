"""Geometry helpers and the waypoint tracker (pure pursuit + PID speed) shared by the env and the expert.

Frames: highway-env's world frame is x right, y *down* (screen coordinates); heading is measured from +x
towards +y, so a positive heading rate turns the car to the driver's right. The ego frame used for every
action and waypoint is x forward, y LEFT (the nuPlan / CARLA-garage convention), in metres.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LENGTH = 5.0  # highway-env Vehicle.LENGTH (bicycle model about the centre, wheelbase = LENGTH)


def wrap(a: float | np.ndarray) -> float | np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def world_to_ego(points: np.ndarray, pos: np.ndarray, heading: float) -> np.ndarray:
    """World (x right, y down) -> ego (x forward, y left)."""
    d = np.asarray(points, dtype=np.float64) - pos
    c, s = np.cos(heading), np.sin(heading)
    return np.stack([d[..., 0] * c + d[..., 1] * s, d[..., 0] * s - d[..., 1] * c], axis=-1)


def ego_to_world(points: np.ndarray, pos: np.ndarray, heading: float) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    c, s = np.cos(heading), np.sin(heading)
    x, y = p[..., 0], p[..., 1]
    return np.stack([pos[0] + x * c + y * s, pos[1] + x * s - y * c], axis=-1)


class Path:
    """A polyline with arc length: projection, interpolation, headings (world frame)."""

    def __init__(self, points: np.ndarray):
        pts = np.asarray(points, dtype=np.float64)
        keep = np.ones(len(pts), bool)
        keep[1:] = np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-3
        pts = pts[keep]
        if len(pts) < 2:
            raise ValueError(f"a path needs at least 2 distinct points, got {len(pts)}")
        self.points = pts
        seg = np.diff(pts, axis=0)
        self.seg_len = np.linalg.norm(seg, axis=1)
        self.seg_dir = seg / self.seg_len[:, None]
        self.s = np.concatenate([[0.0], np.cumsum(self.seg_len)])
        self.length = float(self.s[-1])

    def project(self, p: np.ndarray, s_hint: float | None = None, window: float = 30.0) -> tuple[float, float]:
        """(arc length, signed lateral offset in world frame) of the closest point; searches near s_hint."""
        lo, hi = 0, len(self.seg_len)
        if s_hint is not None:
            lo = max(0, int(np.searchsorted(self.s, s_hint - window)) - 1)
            hi = min(len(self.seg_len), int(np.searchsorted(self.s, s_hint + window)) + 1)
        a = self.points[lo:hi]
        d = self.seg_dir[lo:hi]
        rel = p - a
        t = np.clip(np.einsum("ij,ij->i", rel, d), 0.0, self.seg_len[lo:hi])
        foot = a + d * t[:, None]
        dist = np.linalg.norm(p - foot, axis=1)
        i = int(np.argmin(dist))
        cross = d[i, 0] * rel[i, 1] - d[i, 1] * rel[i, 0]
        return float(self.s[lo + i] + t[i]), float(np.sign(cross) * dist[i])

    def at(self, s: np.ndarray | float) -> np.ndarray:
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, self.length)
        x = np.interp(s, self.s, self.points[:, 0])
        y = np.interp(s, self.s, self.points[:, 1])
        return np.stack([x, y], axis=-1)

    def heading(self, s: np.ndarray | float) -> np.ndarray:
        i = np.clip(np.searchsorted(self.s, np.asarray(s), side="right") - 1, 0, len(self.seg_dir) - 1)
        d = self.seg_dir[i]
        return np.arctan2(d[..., 1], d[..., 0])


@dataclass
class TrackerGains:
    kp: float = 4.0
    ki: float = 0.2
    kd: float = 0.0
    lookahead_time: float = 0.6  # pure-pursuit look-ahead = clip(t * v, min, max) metres
    lookahead_min: float = 4.0
    lookahead_max: float = 20.0
    acc_min: float = -6.0
    acc_max: float = 4.0
    steer_max: float = float(np.pi / 4)
    i_limit: float = 2.0


class WaypointTracker:
    """Pure pursuit (lateral) + PID on speed (longitudinal) tracking ego-frame temporal waypoints.

    Waypoints ``wp[k]`` are the positions the car should reach at ``(k + 1) * dt`` seconds. Desired speed
    = arc length of the first two waypoints / (2 dt); with ``kp = 1 / dt`` a waypoint set drawn from a
    constant-acceleration profile is reproduced exactly by the P term.
    """

    def __init__(self, dt_wp: float, gains: TrackerGains | None = None):
        self.dt_wp = dt_wp
        self.g = gains or TrackerGains()
        self.reset()

    def reset(self) -> None:
        self.i_err = 0.0
        self.prev_err = 0.0

    def desired_speed(self, wp: np.ndarray) -> float:
        arc = np.linalg.norm(wp[0]) + np.linalg.norm(wp[1] - wp[0])
        return float(arc / (2 * self.dt_wp))

    def control(self, wp_ego: np.ndarray, speed: float, dt: float) -> tuple[float, float]:
        """Return (acceleration m/s^2, steering rad in highway-env's sign: positive = right)."""
        g = self.g
        v_des = self.desired_speed(wp_ego)
        err = v_des - speed
        self.i_err = float(np.clip(self.i_err + err * dt, -g.i_limit, g.i_limit))
        d_err = (err - self.prev_err) / dt if dt > 0 else 0.0
        self.prev_err = err
        acc = g.kp * err + g.ki * self.i_err + g.kd * d_err
        if v_des < 0.05 and speed < 0.3:  # hold still
            acc = min(acc, -speed / max(dt, 1e-3))
            self.i_err = 0.0
        acc = float(np.clip(acc, g.acc_min, g.acc_max))
        # pure pursuit on the polyline origin -> waypoints
        ld = float(np.clip(g.lookahead_time * speed, g.lookahead_min, g.lookahead_max))
        pts = np.vstack([[0.0, 0.0], wp_ego])
        dist = np.linalg.norm(pts, axis=1)
        if dist.max() < 1.0:
            return acc, 0.0
        idx = np.nonzero(dist >= ld)[0]
        if len(idx) == 0:
            target = pts[int(np.argmax(dist))]
        else:
            j = int(idx[0])
            a, b = pts[j - 1], pts[j]
            # point on segment a-b at distance ld from origin
            d = b - a
            A, B, C = d @ d, 2 * a @ d, a @ a - ld * ld
            disc = max(B * B - 4 * A * C, 0.0)
            t = float(np.clip((-B + np.sqrt(disc)) / (2 * A), 0.0, 1.0)) if A > 1e-9 else 0.0
            target = a + t * d
        l2 = float(target @ target)
        if target[0] < 0.2 and abs(target[1]) < 0.2:
            return acc, 0.0
        kappa = 2.0 * target[1] / max(l2, 1e-6)  # curvature, positive = left
        sin_beta = float(np.clip(kappa * LENGTH / 2, -0.999, 0.999))
        beta = np.arcsin(sin_beta)
        steer_left = float(np.arctan(2 * np.tan(beta)))
        steer = float(np.clip(-steer_left, -g.steer_max, g.steer_max))  # highway-env: positive = right
        return acc, steer
