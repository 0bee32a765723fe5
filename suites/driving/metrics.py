"""Per-episode and aggregate driving metrics (definitions and sources in protocol.yaml, section ``metrics``).

Every figure here is computed closed-loop from highway-env's simulator state: CARLA-style and
NAVSIM-PDMS-style *analogues*, never CARLA or NAVSIM numbers.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

SIMULATOR = "highway-env"
INFRACTION_KINDS = ("vehicle_collision", "static_collision", "off_road", "wrong_route", "wrong_speed",
                    "timeout_blocked")
LABELS = {
    "success_rate": "success rate (highway-env): route completed, instructed destination/lane/speed, no infraction",
    "route_completion": "route completion RC in [0, 100] (highway-env)",
    "driving_score": "CARLA-style driving score DS = RC x prod(penalties) (highway-env)",
    "pdms": "PDMS-style score (highway-env) = NC x DAC x (5 TTC + 5 EP + 2 C) / 12, in [0, 100]",
}


def driving_score(route_completion: float, infractions: Mapping[str, int], penalties: Mapping[str, float]) -> float:
    """CARLA / Bench2Drive: DS = RC x prod over infractions of penalty ** count (RC in [0, 100])."""
    if not 0.0 <= route_completion <= 100.0:
        raise ValueError(f"route_completion must be in [0, 100], got {route_completion}")
    factor = 1.0
    for kind, count in infractions.items():
        if kind not in penalties:
            raise KeyError(f"no penalty defined for infraction kind {kind!r} (known: {sorted(penalties)})")
        factor *= float(penalties[kind]) ** int(count)
    return route_completion * factor


def pdms(nc: float, dac: float, ttc: float, ep: float, comfort: float) -> float:
    """NAVSIM PDMS = NC x DAC x (5 TTC + 5 EP + 2 C) / 12, each term in [0, 1]; returns [0, 1]."""
    for name, v in (("nc", nc), ("dac", dac), ("ttc", ttc), ("ep", ep), ("comfort", comfort)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"PDMS term {name} must be in [0, 1], got {v}")
    return nc * dac * (5 * ttc + 5 * ep + 2 * comfort) / 12.0


def _smooth(x: np.ndarray, k: int = 3) -> np.ndarray:
    if len(x) < k:
        return x
    pad = k // 2
    xp = np.concatenate([np.repeat(x[:1], pad), x, np.repeat(x[-1:], pad)])
    return np.convolve(xp, np.ones(k) / k, mode="valid")


def comfort_flags(speed: np.ndarray, heading: np.ndarray, dt: float, thr: Mapping[str, float]) -> np.ndarray:
    """Per-step comfort (True = within every nuPlan/NAVSIM comfort bound) from speed and heading traces."""
    n = len(speed)
    if n < 3:
        return np.ones(n, bool)
    v = _smooth(np.asarray(speed, float))
    h = np.unwrap(np.asarray(heading, float))
    yaw_rate = _smooth(np.gradient(h, dt))
    yaw_acc = _smooth(np.gradient(yaw_rate, dt))
    a_lon = _smooth(np.gradient(v, dt))
    a_lat = v * yaw_rate
    j_lon = np.gradient(a_lon, dt)
    j_lat = np.gradient(a_lat, dt)
    j_mag = np.hypot(j_lon, j_lat)
    return ((a_lon >= thr["min_lon_accel"]) & (a_lon <= thr["max_lon_accel"])
            & (np.abs(a_lat) <= thr["max_abs_lat_accel"]) & (np.abs(yaw_rate) <= thr["max_abs_yaw_rate"])
            & (np.abs(yaw_acc) <= thr["max_abs_yaw_accel"]) & (np.abs(j_lon) <= thr["max_abs_lon_jerk"])
            & (j_mag <= thr["max_abs_mag_jerk"]))


def window_score(ok: np.ndarray, window: int) -> float:
    """Mean over consecutive windows of ``window`` steps of all(ok in window) — NAVSIM's binary per-horizon
    sub-score, applied to successive horizons of a closed-loop episode. 1.0 for an empty trace."""
    ok = np.asarray(ok, bool)
    if len(ok) == 0:
        return 1.0
    chunks = [ok[i:i + window] for i in range(0, len(ok), window)]
    return float(np.mean([c.all() for c in chunks]))


def episode_metrics(*, route_completion: float, infractions: Mapping[str, int], at_fault_vehicle_collision: bool,
                    static_collision: bool, ever_off_road: bool, ttc_ok: np.ndarray, speed: np.ndarray,
                    heading: np.ndarray, dt: float, params: Mapping[str, Any]) -> dict[str, Any]:
    pen = params["penalties"]
    ds = driving_score(route_completion, infractions, pen)
    nc = 0.0 if at_fault_vehicle_collision else (0.5 if static_collision else 1.0)
    dac = 0.0 if ever_off_road else 1.0
    window = int(round(params["pdms_window_s"] / dt))
    ttc = window_score(ttc_ok, window)
    comfort = window_score(comfort_flags(speed, heading, dt, params["comfort"]), window)
    ep = route_completion / 100.0
    return {"route_completion": route_completion, "driving_score": ds,
            "infraction_penalty": ds / route_completion if route_completion > 0 else float(np.prod(
                [pen[k] ** c for k, c in infractions.items()])),
            "pdms": 100.0 * pdms(nc, dac, ttc, ep, comfort), "nc": nc, "dac": dac, "ttc": ttc, "ep": ep,
            "comfort": comfort}


def aggregate(metrics: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Suite metrics: means over episodes, infraction counts per kind and per 100 episodes, per scenario."""
    rows = [m for m in metrics if m and "driving_score" in m]
    if not rows:
        return {"simulator": SIMULATOR, "n_with_metrics": 0}

    def summary(rs: list[Mapping[str, Any]]) -> dict[str, Any]:
        n = len(rs)
        out: dict[str, Any] = {"n": n, "success_rate": float(np.mean([bool(r["success"]) for r in rs]))}
        for key in ("driving_score", "route_completion", "pdms", "nc", "dac", "ttc", "ep", "comfort",
                    "infraction_penalty", "duration_s", "mean_speed"):
            vals = [float(r[key]) for r in rs if r.get(key) is not None]
            out[key] = float(np.mean(vals)) if vals else None
            if key in ("driving_score", "route_completion", "pdms") and len(vals) > 1:
                out[key + "_ci95"] = _mean_ci(vals)
        counts = {k: int(sum(int(r["infractions"].get(k, 0)) for r in rs)) for k in INFRACTION_KINDS}
        out["infractions"] = counts
        out["infractions_per_100_episodes"] = {k: 100.0 * c / n for k, c in counts.items()}
        outcomes: dict[str, int] = {}
        for r in rs:
            outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
        out["outcomes"] = dict(sorted(outcomes.items()))
        return out

    top = {"simulator": SIMULATOR, "labels": LABELS, **summary(rows)}
    by_scenario: dict[str, list] = {}
    for r in rows:
        by_scenario.setdefault(r["scenario"], []).append(r)
    if len(by_scenario) > 1:
        top["per_scenario"] = {k: summary(v) for k, v in sorted(by_scenario.items())}
    return top


def _mean_ci(vals: list[float]) -> list[float]:
    """Normal-approximation 95% interval of a mean."""
    a = np.asarray(vals, float)
    half = 1.959963984540054 * a.std(ddof=1) / math.sqrt(len(a))
    return [float(a.mean() - half), float(a.mean() + half)]
