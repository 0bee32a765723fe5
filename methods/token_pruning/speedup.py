"""Speed-ups with intervals: the suite's teacher and several methods timed interleaved in one process on the
same recorded observations (single thread), FLOPs per call counted on the ops that ran.

For each method: speedup = median teacher latency / median method latency, with a 95 % bootstrap interval
over paired rounds (each round times every policy once, in a rotated order); the FLOPs ratio per call.
Writes ``<results>/<suite>/<method_id>/speedup-<device>.json`` per method and prints a table.

    python -m methods.token_pruning.speedup --suite mock-v1 --methods fastv,sparsevlm,vla_cache,random \
        --calls 200 --results results
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def bootstrap_speedup(t: np.ndarray, m: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    point = float(np.median(t) / np.median(m))
    idx = rng.integers(0, len(t), size=(n_boot, len(t)))
    boots = np.median(t[idx], axis=1) / np.median(m[idx], axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return point, float(lo), float(hi)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--methods", required=True, help="comma-separated method ids")
    ap.add_argument("--calls", type=int, default=200, help="timed rounds (each times every policy once)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-obs", type=int, default=32)
    ap.add_argument("--results", default="results")
    ap.add_argument("--cache-dir", default=".cache")
    ap.add_argument("--teacher", default=None, help="teacher method id (default: the suite's teacher)")
    args = ap.parse_args(argv)

    import torch

    from harness.plugins import make_suite
    from harness.profiling import flops_per_call, observations
    from harness.results.provenance import load_average, now_iso
    from harness.runner import build_policy
    from harness.specs import RunSpec

    torch.set_num_threads(args.threads)
    suite = make_suite(args.suite)
    teacher_id = args.teacher or suite.teacher
    if args.teacher:
        suite.teacher = args.teacher
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    policies: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    teacher = build_policy(RunSpec(method=teacher_id, suite=args.suite, cache_dir=args.cache_dir), suite=suite)
    policies["teacher"] = teacher.policy
    for mid in [m for m in args.methods.split(",") if m]:
        overrides: tuple = ()
        if mid.endswith("]") and "[" in mid:  # "shallow_pi@keep4[steps=500;batch=32]": config overrides
            from harness.interfaces import parse_value

            mid, _, ov = mid[:-1].partition("[")
            overrides = tuple(sorted((k, parse_value(v)) for k, v in (x.split("=", 1) for x in ov.split(";"))))
        b = build_policy(RunSpec(method=mid, suite=args.suite, cache_dir=args.cache_dir, overrides=overrides),
                         suite=suite)
        policies[mid], configs[mid] = b.policy, b.config.to_dict()
    torch.set_num_threads(args.threads)
    path = Path(args.cache_dir) / "profile_obs" / suite.suite_id / f"speedup-{teacher_id}-{args.n_obs}.npz"
    if path.exists():
        rec = observations.load(path)
    else:
        log(f"[speedup] recording {args.n_obs} observations with {teacher_id}")
        rec = observations.collect(suite, teacher.policy, privileged=False, n_obs=args.n_obs)
        observations.save(rec, path)
    tasks = {t.name: t for t in suite.tasks()}
    n = len(rec)

    def caller(pol):
        def call(i: int):
            j = i % n
            if rec.starts[j] or i == 0:
                pol.reset(tasks[rec.task_names[j]], rec.seeds[j])
            return pol.infer(rec.obs[j])
        return call

    log(f"[speedup] FLOPs over {n} observations")
    flops = {}
    for name, pol in policies.items():
        f, _ = flops_per_call(pol, rec, tasks)
        flops[name] = f
    calls = {name: caller(pol) for name, pol in policies.items()}
    names = list(calls)
    wall = {k: [] for k in names}
    cpu = {k: [] for k in names}
    load_before = load_average()
    log(f"[speedup] timing {args.calls} interleaved rounds of {len(names)} policies (load {os.getloadavg()[0]:.1f})")
    with torch.inference_mode():
        # every policy replays the recording from its start, in lock-step (caches see consecutive frames)
        for i in range(args.warmup):
            for k in names:
                calls[k](i)
        for r in range(args.calls):
            i = args.warmup + r
            order = names[r % len(names):] + names[:r % len(names)]
            for k in order:
                c0, w0 = time.thread_time(), time.perf_counter()
                calls[k](i)
                wall[k].append((time.perf_counter() - w0) * 1e3)
                cpu[k].append((time.thread_time() - c0) * 1e3)
    load_after = load_average()
    t_w, t_c = np.array(wall["teacher"]), np.array(cpu["teacher"])
    rows = []
    for name in names[1:]:
        m_w, m_c = np.array(wall[name]), np.array(cpu[name])
        s, lo, hi = bootstrap_speedup(t_w, m_w)
        cs, clo, chi = bootstrap_speedup(t_c, m_c)
        pol = policies[name]
        stats = pol.episode_stats() if hasattr(pol, "episode_stats") else {}
        rec_out = {
            "schema_version": 1, "method": name, "suite": suite.suite_id, "teacher": teacher_id,
            "measured_at": now_iso(), "n_rounds": args.calls, "warmup": args.warmup, "threads": args.threads,
            "n_observations": n, "load_average_before": load_before, "load_average_after": load_after,
            "interleaved_with": names, "method_config": configs[name],
            "speedup_wall": {"median_ratio": s, "ci95": [lo, hi]},
            "speedup_cpu": {"median_ratio": cs, "ci95": [clo, chi]},
            "latency_ms": {"p50": float(np.median(m_w)), "p90": float(np.percentile(m_w, 90))},
            "teacher_latency_ms": {"p50": float(np.median(t_w)), "p90": float(np.percentile(t_w, 90))},
            "gflops_per_call": flops[name] / 1e9, "teacher_gflops_per_call": flops["teacher"] / 1e9,
            "flops_ratio": flops[name] / flops["teacher"],
            "last_episode_stats": stats,
            "note": "speedup = median teacher / median method over paired interleaved rounds; 95% bootstrap CI "
                    "(2000 resamples of rounds). Shared 2-core machine: see load averages.",
        }
        out = Path(args.results) / suite.suite_id / name / "speedup-cpu.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rec_out, indent=2, default=float) + "\n")
        rows.append((name, s, lo, hi, cs, clo, chi, flops[name] / flops["teacher"], float(np.median(m_w))))
    print(f"\n{suite.suite_id}: teacher {teacher_id} p50 {np.median(t_w):.2f} ms, {flops['teacher'] / 1e9:.4f} GFLOPs/call;"
          f" {args.calls} rounds, {args.threads} thread, load {load_before} -> {load_after}")
    print(f"{'method':28s} {'speedup (wall) [95% CI]':28s} {'speedup (cpu) [95% CI]':28s} {'FLOPs ratio':>11s} {'p50 ms':>8s}")
    for name, s, lo, hi, cs, clo, chi, fr, p50 in rows:
        print(f"{name:28s} {s:5.2f} [{lo:4.2f}, {hi:4.2f}]{'':13s} {cs:5.2f} [{clo:4.2f}, {chi:4.2f}]{'':13s} {fr:11.3f} {p50:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
