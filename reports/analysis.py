"""Figures derived from stored results: speedup intervals, paired success differences against the teacher,
and the roofline projection to devices we do not have. Statistics come from ``harness.stats``.

Speedup interval (documented in docs/reporting.md):
- if both latency records carry raw per-call samples (``samples`` list), a bootstrap of the ratio of medians;
- otherwise (the current schema stores percentiles only) the p50 ratio with a delta-method interval on
  log(p50): sigma of each distribution is estimated robustly as (p90 - p50) / 1.2816, the standard error of
  a median as 1.2533 * sigma / sqrt(n), and the two errors are combined as if independent. Interleaved
  measurements are positively correlated, so this interval is conservative (too wide, not too narrow).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness.stats import Z95, paired_difference

Z90 = 1.2815515655446004
MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2)  # SE(median) = 1.2533 sigma / sqrt(n) for a normal distribution
DTYPE_BYTES = {"fp32": 4, "float32": 4, "fp16": 2, "float16": 2, "bf16": 2, "bfloat16": 2, "int8": 1,
               "fp8": 1, "int4": 0.5, "fp4": 0.5, "fp64": 8, "float64": 8}


# --------------------------------------------------------------------------------------------------
# speedup with an interval
# --------------------------------------------------------------------------------------------------
def _median_se(lat: dict) -> float | None:
    n = lat.get("n")
    if not n or lat.get("p90") is None or lat.get("p50") is None:
        return None
    sigma = max(lat["p90"] - lat["p50"], 0.0) / Z90
    return MEDIAN_SE_FACTOR * sigma / math.sqrt(n)


def median_halfwidth(lat: dict | None) -> float | None:
    """Half-width of the 95% interval of a recorded p50 (same estimate as the speedup interval)."""
    se = _median_se(lat or {})
    return None if se is None else Z95 * se


def speedup_interval(teacher_lat: dict | None, method_lat: dict | None, n_boot: int = 2000,
                     seed: int = 0) -> dict[str, Any] | None:
    """teacher p50 / method p50 with a 95% interval; None when either record is missing."""
    if not teacher_lat or not method_lat or not method_lat.get("p50") or not teacher_lat.get("p50"):
        return None
    ts, ms = teacher_lat.get("samples"), method_lat.get("samples")
    if ts and ms:
        rng = np.random.default_rng(seed)
        t, m = np.asarray(ts, float), np.asarray(ms, float)
        boots = np.median(t[rng.integers(0, len(t), (n_boot, len(t)))], axis=1) / \
            np.median(m[rng.integers(0, len(m), (n_boot, len(m)))], axis=1)
        lo, hi = np.quantile(boots, [0.025, 0.975])
        return {"value": float(np.median(t) / np.median(m)), "ci95": [float(lo), float(hi)],
                "method": f"bootstrap of the ratio of medians over raw samples (n={len(t)}, {len(m)})"}
    ratio = teacher_lat["p50"] / method_lat["p50"]
    se_t, se_m = _median_se(teacher_lat), _median_se(method_lat)
    if se_t is None or se_m is None:
        return {"value": ratio, "ci95": None, "method": "p50 ratio (no sample count recorded: no interval)"}
    se_log = math.sqrt((se_t / teacher_lat["p50"]) ** 2 + (se_m / method_lat["p50"]) ** 2)
    return {"value": ratio, "ci95": [ratio * math.exp(-Z95 * se_log), ratio * math.exp(Z95 * se_log)],
            "method": "p50 ratio; delta-method interval on log p50 from the recorded p90-p50 spread and n"}


def run_speedup(metrics: dict | None) -> dict[str, Any] | None:
    """The method's speedup against the teacher it was profiled with (wall-clock latency)."""
    vt = (metrics or {}).get("vs_teacher")
    if not vt:
        return None
    out = speedup_interval(vt.get("teacher_latency_ms"), metrics.get("latency_ms"))
    if out is None and vt.get("speedup") is not None:
        out = {"value": vt["speedup"], "ci95": None, "method": "vs_teacher.speedup (no latency records)"}
    return out


# --------------------------------------------------------------------------------------------------
# paired success difference against the teacher
# --------------------------------------------------------------------------------------------------
def paired_vs(base_outcomes: dict[str, bool], cand_outcomes: dict[str, bool], seed: int = 0) -> dict[str, Any]:
    """cand − base success on the shared episode ids: bootstrap 95% interval and exact McNemar p."""
    shared = sorted(set(base_outcomes) & set(cand_outcomes))
    out = paired_difference([base_outcomes[i] for i in shared], [cand_outcomes[i] for i in shared], seed=seed)
    out["only_base"] = len(set(base_outcomes) - set(cand_outcomes))
    out["only_cand"] = len(set(cand_outcomes) - set(base_outcomes))
    return out


# --------------------------------------------------------------------------------------------------
# roofline projection
# --------------------------------------------------------------------------------------------------
def param_dtype(metrics: dict | None, run: dict | None) -> tuple[str, bool]:
    """The parameter dtype recorded in the results (metrics, then method config), or fp32 as an assumption."""
    for src in ((metrics or {}), (metrics or {}).get("profiling") or {}, (run or {}).get("method_config") or {}):
        for key in ("param_dtype", "dtype", "precision"):
            v = src.get(key)
            if isinstance(v, str) and v.lower().replace("torch.", "") in DTYPE_BYTES:
                return v.lower().replace("torch.", ""), True
    return "fp32", False


def bytes_per_call(metrics: dict | None, run: dict | None) -> tuple[float | None, str]:
    """Bytes moved per infer call and how it was obtained (results first, else parameter bytes)."""
    m = metrics or {}
    for src, label in ((m, "metrics.json"), (m.get("profiling") or {}, "metrics.json profiling")):
        for key in ("bytes_per_call", "bytes_moved_per_call"):
            if isinstance(src.get(key), (int, float)):
                return float(src[key]), f"{label} {key}"
    if m.get("params") is None:
        return None, "no parameter count recorded"
    dtype, recorded = param_dtype(metrics, run)
    how = f"params x {DTYPE_BYTES[dtype]} B ({dtype}{'' if recorded else ', assumed: no dtype recorded'})"
    return m["params"] * DTYPE_BYTES[dtype], how


def project(device: dict, gflops_per_call: float | None, nbytes: float | None) -> dict[str, Any] | None:
    """Roofline: t = max(FLOPs / (peak * eff), bytes / (bandwidth * eff)), in ms. None without FLOPs or bytes."""
    if gflops_per_call is None or nbytes is None:
        return None
    eff = float(device.get("efficiency", 1.0))
    t_compute = gflops_per_call * 1e9 / (float(device["peak_tflops"]) * 1e12 * eff)
    t_memory = nbytes / (float(device["bandwidth_gbs"]) * 1e9 * eff)
    return {"ms": max(t_compute, t_memory) * 1e3, "bound": "compute" if t_compute >= t_memory else "memory",
            "compute_ms": t_compute * 1e3, "memory_ms": t_memory * 1e3}


def projected_devices() -> list[dict]:
    """Device profiles from harness/devices/*.yaml that carry roofline figures (the measured ones do not)."""
    from harness.plugins import DEVICES

    out = []
    for entry in DEVICES:
        d = DEVICES.make(entry.name)
        if not d.get("measured") and d.get("peak_tflops") and d.get("bandwidth_gbs"):
            out.append(d)
    return out


def all_devices() -> list[dict]:
    from harness.plugins import DEVICES

    return [DEVICES.make(e.name) for e in DEVICES]
