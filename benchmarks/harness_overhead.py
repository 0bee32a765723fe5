"""Benchmark: the runner's overhead against a bare loop, and WORKERS=2 vs WORKERS=1 throughput.

    make bench-harness            (or: .venv/bin/python benchmarks/harness_overhead.py --out results/benchmarks/harness.json)

1. Overhead: the same env, policy and episodes, run (a) by a bare loop (reset, infer, step — nothing else) and
   (b) by the runner's executor (action checks, privileged stripping, per-episode metrics, JSON line + fsync,
   progress bar). Repeated, alternating a/b; overhead = median(b)/median(a) − 1.
   Workload: the mock suite with a policy that costs `--infer-ms` per call (a sleep standing in for a model),
   so the ratio reflects a realistic episode length rather than the mock's sub-millisecond episodes.
2. Throughput: a CPU-bound policy (`spin_s`), the same episodes with WORKERS=1 and WORKERS=2 (process pool),
   episodes per second of the execute phase (pool start-up included).
The load average before and after is recorded: on a shared machine the throughput ratio is bounded by it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from harness.executors.local import execute_local
from harness.results import provenance
from harness.results.store import RunDir
from harness.runner import build_policy, set_threads
from harness.specs import RunSpec


def bare_loop(built, episodes) -> float:
    suite, policy = built.suite, built.policy
    envs = {}
    t0 = time.perf_counter()
    for ep in episodes:
        env = envs.get(ep.task.name) or envs.setdefault(ep.task.name, suite.make_env(ep.task))
        obs, _ = env.reset(seed=ep.seed, options={"episode": ep})
        policy.reset(ep.task, ep.seed)
        steps, done = 0, False
        while not done and steps < ep.max_steps:
            for a in policy.infer(obs).executed():
                obs, _, term, trunc, info = env.step(a)
                steps += 1
                if term or trunc or info["success"] or steps >= ep.max_steps:
                    done = True
                    break
    return time.perf_counter() - t0


def runner_loop(spec, built, episodes) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        rd = RunDir(Path(tmp) / "run")
        rd.path.mkdir(parents=True)
        t0 = time.perf_counter()
        execute_local(spec, built, episodes, rd, progress=False)
        elapsed = time.perf_counter() - t0
        done = rd.read_episodes()
        assert len(done) == len(episodes)
    ends = sorted(e["finished_at"] for e in done)
    steady = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 and ends[-1] > ends[0] else float("nan")
    return elapsed, steady


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--infer-ms", type=float, default=20.0)  # ~ one reference-teacher call
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--spin-ms", type=float, default=40.0)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--out", default="results/benchmarks/harness_overhead.json")
    a = ap.parse_args()
    set_threads(1)
    load_before = provenance.load_average()

    spec = RunSpec(method="mock", suite="mock-v1", profile=a.profile, overrides=(("delay_s", a.infer_ms / 1e3),),
                   skip_profile=True)
    built = build_policy(spec)
    episodes = built.suite.episodes(a.profile)
    bare, runner = [], []
    for _ in range(a.repeats):
        bare.append(bare_loop(built, episodes))
        runner.append(runner_loop(spec, built, episodes)[0])
    overhead = statistics.median(runner) / statistics.median(bare) - 1

    thr = {}
    for workers in (1, 2):
        s = RunSpec(method="mock", suite="mock-v1", profile="full", workers=workers,
                    overrides=(("spin_s", a.spin_ms / 1e3),), skip_profile=True)
        b = build_policy(s)
        eps = b.suite.episodes("full")
        dt, steady = runner_loop(s, b, eps)
        thr[workers] = {"episodes": len(eps), "seconds": dt, "episodes_per_s": len(eps) / dt,
                        "steady_episodes_per_s": steady}
    result = {
        "measured_at": provenance.now_iso(), "git_commit": provenance.git_state()[0],
        "host_cpu": provenance.cpu_model(), "load_average_before": load_before,
        "load_average_after": provenance.load_average(),
        "overhead": {"workload": f"mock-v1 {a.profile}, {len(episodes)} episodes, policy {a.infer_ms} ms/call (sleep)",
                     "repeats": a.repeats, "bare_s": bare, "runner_s": runner,
                     "overhead_fraction_median": overhead},
        "throughput": {"workload": f"mock-v1 full, CPU-bound policy {a.spin_ms} ms/call", **{f"workers{k}": v for k, v in thr.items()},
                       "ratio_2_over_1": thr[2]["episodes_per_s"] / thr[1]["episodes_per_s"],
                       "steady_ratio_2_over_1": thr[2]["steady_episodes_per_s"] / thr[1]["steady_episodes_per_s"]},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"runner overhead: {overhead * 100:+.2f}% of wall time (median of {a.repeats}; bare "
          f"{statistics.median(bare):.2f} s, runner {statistics.median(runner):.2f} s)")
    print(f"throughput: WORKERS=1 {thr[1]['episodes_per_s']:.2f} ep/s, WORKERS=2 {thr[2]['episodes_per_s']:.2f} ep/s, "
          f"ratio {result['throughput']['ratio_2_over_1']:.2f}x incl. pool start-up, "
          f"{result['throughput']['steady_ratio_2_over_1']:.2f}x steady state  (load {load_before} -> {result['load_average_after']})")
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
