"""Benchmark: scale-out — executors, the policy server's added latency, and server-side batching.

    .venv/bin/python benchmarks/scaleout.py [--part executors,latency,batching] [--reps 3] [--out FILE]

1. executors: episodes/hour of the execute phase for EXECUTOR=local and EXECUTOR=ray with WORKERS=1 and 2,
   on the mock suite with a CPU-bound policy (``spin_s`` per call, so the work scales with cores, not sleeps).
   Repetitions alternate the four configurations. Two rates per run: ``total`` (pool / actor start-up
   included) and ``steady`` (from the spread of the episodes' finished_at stamps). Ray is initialised once
   (num_cpus=2, loopback, no dashboard), as a long-lived cluster would be; its start-up time is reported apart.
2. latency: a server in a child process serving the mock policy; the client interleaves remote and in-process
   calls on the same recorded observations, single-threaded. Added latency per call = round trip minus the
   server's own compute time (and, as a cross-check, remote round trip minus the in-process call time);
   then n more remote calls back to back (nothing in between: the server never goes idle).
3. batching: a server child process with --max-batch B in {1, 2, 4} serving ``mock@teacher``; B parallel
   envs (threads of this process, each with its own env and connection, so no worker start-up is timed) run
   the profile's episodes ``--batch-passes`` times; episodes/hour, the mean batch size the server saw, and
   every per-episode outcome that differs from B=1 (listed, not hidden). Repetitions alternate the order of B.
   The control ``4:1`` (4 clients, no batching) separates the gain of batching from that of 4 parallel envs.

The load average is recorded before and after every measurement: this machine's 2 cores are shared.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.executors import execute
from harness.results.store import RunDir
from harness.runner import build_policy, set_threads
from harness.specs import RunSpec


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def rates(eps: list[dict], elapsed: float) -> dict[str, float]:
    ends = sorted(e["finished_at"] for e in eps)
    steady = (len(ends) - 1) / (ends[-1] - ends[0]) * 3600 if len(ends) > 1 and ends[-1] > ends[0] else float("nan")
    return {"total_eph": len(eps) / elapsed * 3600, "steady_eph": steady, "elapsed_s": elapsed}


def ci_median(x: list[float], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    a = np.asarray(x)
    meds = np.median(rng.choice(a, size=(reps, len(a)), replace=True), axis=1)
    return float(np.percentile(meds, 2.5)), float(np.percentile(meds, 97.5))


# ----- 1. executors -----
def bench_executors(reps: int, profile: str, spin_ms: float) -> dict[str, Any]:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.ERROR,
             log_to_driver=False)
    ray_init_s = time.perf_counter() - t0
    configs = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]
    runs: dict[str, list[dict]] = {f"{e}-w{w}": [] for e, w in configs}
    outcomes: dict[str, set] = {}
    for rep in range(reps):
        for executor, workers in (configs if rep % 2 == 0 else configs[::-1]):
            spec = RunSpec(method="mock", suite="mock-v1", profile=profile, workers=workers, executor=executor,
                           overrides=(("spin_s", spin_ms / 1000.0),), skip_profile=True)
            built = build_policy(spec)
            with tempfile.TemporaryDirectory() as tmp:
                rd = RunDir(Path(tmp) / "run")
                rd.path.mkdir(parents=True)
                pending = built.suite.episodes(profile)
                before = load()
                t0 = time.perf_counter()
                execute(spec, built, pending, rd, progress=False)
                elapsed = time.perf_counter() - t0
                eps = rd.read_episodes()
            assert len(eps) == len(pending)
            key = f"{executor}-w{workers}"
            runs[key].append({**rates(eps, elapsed), "load_before": before, "load_after": load()})
            outcomes.setdefault(key, set()).add(tuple(sorted((e["episode_id"], e["success"], e["steps"]) for e in eps)))
            print(f"[executors] rep {rep} {key}: {runs[key][-1]}", file=sys.stderr, flush=True)
    ray.shutdown()
    summary = {}
    for key, rs in runs.items():
        summary[key] = {"n_runs": len(rs), "episodes_per_run": len(pending),
                        "total_eph_median": statistics.median(r["total_eph"] for r in rs),
                        "steady_eph_median": statistics.median(r["steady_eph"] for r in rs),
                        "total_eph_all": [round(r["total_eph"]) for r in rs],
                        "steady_eph_all": [round(r["steady_eph"]) for r in rs]}
    for w in (1, 2):
        lo, ra = summary[f"local-w{w}"], summary[f"ray-w{w}"]
        summary[f"ray_vs_local_w{w}"] = {k: ra[f"{k}_eph_median"] / lo[f"{k}_eph_median"] for k in ("total", "steady")}
    all_outcomes = set().union(*outcomes.values())
    return {"ray_init_s": ray_init_s, "spin_ms_per_call": spin_ms, "profile": profile, "runs": runs,
            "summary": summary, "identical_outcomes_across_all": len(all_outcomes) == 1}


# ----- 2. server latency -----
def _proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (all threads), from /proc (Linux; 10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_latency(n: int) -> dict[str, Any]:
    from harness.profiling import observations
    from harness.server.client import RemotePolicy, spawn_server

    built = build_policy(RunSpec(method="mock", suite="mock-v1"))
    rec = observations.collect(built.suite, built.policy, privileged=False)
    tasks = {t.name: t for t in built.suite.tasks()}
    proc, address = spawn_server("mock", "mock-v1", cwd=str(ROOT))
    try:
        remote = RemotePolicy(address)
        remote.reset(tasks[rec.task_names[0]], rec.seeds[0])
        built.policy.reset(tasks[rec.task_names[0]], rec.seeds[0])
        for i in range(50):  # warm-up
            remote.infer(rec.obs[i % len(rec)])
            built.policy.infer(rec.obs[i % len(rec)])
        rtt, comp, local, added, client_cpu = [], [], [], [], []
        server_cpu0 = _proc_cpu_s(proc.pid)
        before = load()
        for i in range(n):
            o = rec.obs[i % len(rec)]
            order = (0, 1) if i % 2 == 0 else (1, 0)  # interleaved, alternating which goes first
            for which in order:
                if which == 0:
                    t0 = time.perf_counter()
                    built.policy.infer(o)
                    local.append((time.perf_counter() - t0) * 1000)
                else:
                    c0 = time.process_time()  # every thread of this process: websockets' reader included
                    c = remote.infer(o)
                    client_cpu.append((time.process_time() - c0) * 1000)
                    rtt.append(c.extras["remote_rtt_ms"])
                    comp.append(c.extras["remote_compute_ms"])
                    added.append(rtt[-1] - comp[-1])
        after = load()
        server_cpu_ms = (_proc_cpu_s(proc.pid) - server_cpu0) * 1000 / n
        b2b_added, b2b_rtt = [], []  # back to back: nothing else between two remote calls
        for i in range(n):
            c = remote.infer(rec.obs[i % len(rec)])
            b2b_rtt.append(c.extras["remote_rtt_ms"])
            b2b_added.append(c.extras["remote_rtt_ms"] - c.extras["remote_compute_ms"])
        after_b2b = load()
        remote.close()
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    minus_local = [r - lo for r, lo in zip(rtt, local)]

    def q(x: list[float]) -> dict[str, float]:
        lo, hi = ci_median(x)
        return {"median": float(np.median(x)), "median_ci95": [lo, hi], "p90": float(np.percentile(x, 90)),
                "mean": float(np.mean(x))}

    obs_bytes = sum(v.nbytes for v in rec.obs[0]["images"].values()) + np.asarray(rec.obs[0]["proprio"]).nbytes
    return {"n": n, "obs_bytes": int(obs_bytes), "rtt_ms": q(rtt), "server_compute_ms": q(comp),
            "in_process_ms": q(local), "added_ms": q(added), "rtt_minus_in_process_ms": q(minus_local),
            "client_cpu_ms_per_call": q(client_cpu), "server_cpu_ms_per_call_mean": server_cpu_ms,
            "load_before": before, "load_after": after,
            "back_to_back": {"rtt_ms": q(b2b_rtt), "added_ms": q(b2b_added), "load_after": after_b2b}}


# ----- 3. batching -----
def _client_thread(address: str, suite: Any, episodes: list, passes: int, results: list, errors: list) -> None:
    from harness.runner import run_episode
    from harness.server.client import RemotePolicy

    try:
        remote = RemotePolicy(address)
        envs: dict[str, Any] = {}
        for k in range(passes):
            for ep in episodes:
                env = envs.get(ep.task.name) or envs.setdefault(ep.task.name, suite.make_env(ep.task))
                result, _ = run_episode(env, remote, ep, privileged=False, timeout_s=600)
                results.append((k, result))
        remote.close()
    except Exception as e:  # noqa: BLE001
        errors.append(f"{type(e).__name__}: {e}")


def bench_batching(profile: str, sizes: list[tuple[int, int]], window_ms: float, served: str, reps: int,
                   passes: int) -> dict[str, Any]:
    """B client threads in this process (each its own env and connection: no process start-up in the figure)
    against a server child process with --max-batch B."""
    import threading

    from harness.plugins import make_suite
    from harness.server.client import spawn_server

    suite = make_suite("mock-v1")
    episodes = suite.episodes(profile)
    out: dict[str, Any] = {"served_method": served, "profile": profile, "n_episodes": len(episodes) * passes,
                           "window_ms": window_ms, "clients": "B threads, one env + one connection each",
                           "runs": {}}
    base: dict[str, tuple] | None = None
    for rep in range(reps):
        for clients, b in (sizes if rep % 2 == 0 else sizes[::-1]):
            name = f"batch{b}" if clients == b else f"clients{clients}-batch{b}"
            proc, address = spawn_server(served, "mock-v1", max_batch=b, batch_window_ms=window_ms, cwd=str(ROOT))
            try:
                results: list = []
                errors: list = []
                shards = [episodes[i::clients] for i in range(clients)]
                threads = [threading.Thread(target=_client_thread, args=(address, suite, sh, passes, results, errors))
                           for sh in shards]
                before = load()
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                elapsed = time.perf_counter() - t0
            finally:
                proc.stdin.close()
                proc.wait(timeout=60)
            if errors:
                raise RuntimeError(f"batch {b}: {errors}")
            eps = [r.to_dict() for _, r in results]
            outcome = {r.episode_id: (r.success, r.steps, r.error) for k, r in results if k == 0}
            repeat_diffs = sum(1 for k, r in results if k > 0 and outcome[r.episode_id] != (r.success, r.steps, r.error))
            if base is None and b == 1 and clients == 1:
                base = outcome
            diffs = [] if base is None else [{"episode_id": k, "batch1": base[k], name: v}
                                             for k, v in sorted(outcome.items()) if base.get(k) != v]
            stats = [e["method_stats"] for e in eps]
            run_ = {"elapsed_s": elapsed, "eph": len(eps) / elapsed * 3600, "n_episodes": len(eps),
                    "clients": clients, "max_batch": b,
                    "success": sum(e["success"] for e in eps),
                    "mean_batch_seen": float(np.mean([s.get("remote_batch_mean", 1.0) for s in stats])),
                    "rtt_ms_mean": float(np.mean([s["remote_rtt_ms_mean"] for s in stats])),
                    "compute_ms_mean": float(np.mean([s["remote_compute_ms_mean"] for s in stats])),
                    "outcome_differences_vs_batch1": diffs, "differences_between_passes": repeat_diffs,
                    "passes": passes, "load_before": before, "load_after": load()}
            out["runs"].setdefault(name, []).append(run_)
            print(f"[batching] rep {rep} {name}: {json.dumps(run_)[:400]}", file=sys.stderr, flush=True)
    out["summary"] = {k: {"n_runs": len(v), "eph_median": statistics.median(r["eph"] for r in v),
                          "eph_all": [round(r["eph"]) for r in v],
                          "mean_batch_seen": statistics.mean(r["mean_batch_seen"] for r in v),
                          "outcome_differences_vs_batch1": sum(len(r["outcome_differences_vs_batch1"]) for r in v)}
                      for k, v in out["runs"].items()}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", default="executors,latency,batching")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--profile", default="full", help="mock-v1 profile for the executor and batching runs")
    p.add_argument("--spin-ms", type=float, default=5.0, help="CPU time per infer call (executors)")
    p.add_argument("--latency-n", type=int, default=1000)
    p.add_argument("--batch-sizes", default="1,2,4,4:1",
                   help="B (B clients, --max-batch B) or C:B (C clients, --max-batch B; 4:1 = the unbatched control)")
    p.add_argument("--batch-window-ms", type=float, default=2.0)
    p.add_argument("--served", default="mock@teacher")
    p.add_argument("--batch-passes", type=int, default=5, help="times each client runs its episodes (batching)")
    p.add_argument("--out", default=".cache/benchmarks/scaleout.json")
    a = p.parse_args()
    parts = set(a.part.split(","))
    unknown = parts - {"executors", "latency", "batching"}
    if unknown:
        p.error(f"unknown --part {sorted(unknown)}; choose from executors, latency, batching")
    set_threads(1)  # as every worker and the server do: latency single-threaded
    result: dict[str, Any] = {"host_cpus": os.cpu_count(), "load_start": load(),
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "latency" in parts:
        result["latency"] = bench_latency(a.latency_n)
    if "executors" in parts:
        result["executors"] = bench_executors(a.reps, a.profile, a.spin_ms)
    if "batching" in parts:
        sizes = [(int(c), int(b or c)) for c, _, b in (x.partition(":") for x in a.batch_sizes.split(","))]
        result["batching"] = bench_batching(a.profile, sizes,
                                            a.batch_window_ms, a.served, a.reps, a.batch_passes)
    result["load_end"] = load()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps(result, indent=2, default=float)[:6000])
    print(f"written {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
