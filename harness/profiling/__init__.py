"""The one profiler entry point: FLOPs, latency, parameters and peak memory of a policy's infer calls,
measured on observations recorded from the suite, interleaved with the suite's teacher when it has one."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from harness.profiling import observations
from harness.profiling.flops import CONVENTION, count_flops
from harness.profiling.latency import measure_interleaved
from harness.profiling.memory import count_params, peak_memory_mb

if TYPE_CHECKING:
    from harness.interfaces import Policy, Task
    from harness.runner import Built
    from harness.specs import RunSpec


def recording_for(spec: "RunSpec", built: "Built", log: Callable[[str], None]) -> observations.Recording:
    path = Path(spec.cache_dir) / "profile_obs" / built.suite.suite_id / f"{built.method.method_id}.npz"
    if path.exists():
        try:
            return observations.load(path)
        except Exception as e:  # noqa: BLE001 — a corrupt cache is rebuilt
            log(f"[profile] ignoring unreadable {path}: {e}")
    log(f"[profile] recording observations from {built.suite.suite_id} -> {path}")
    rec = observations.collect(built.suite, built.policy, privileged=False)
    observations.save(rec, path)
    return rec


def _task(built: "Built", name: str) -> "Task":
    for t in built.suite.tasks():
        if t.name == name:
            return t
    raise KeyError(name)


def _replayer(policy: "Policy", rec: observations.Recording, tasks: dict[str, "Task"]) -> Callable[[int], Any]:
    """Call i replays observation i mod n, resetting the policy where an episode started."""
    n = len(rec)

    def call(i: int) -> Any:
        j = i % n
        if rec.starts[j]:
            policy.reset(tasks[rec.task_names[j]], rec.seeds[j])
        return policy.infer(rec.obs[j])

    return call


def flops_per_call(policy: "Policy", rec: observations.Recording, tasks: dict[str, "Task"]) -> tuple[float, float]:
    """Mean FLOPs per call over the recording, and mean actions executed per call."""
    flops, executed = [], []
    call = _replayer(policy, rec, tasks)
    for i in range(len(rec)):
        f, chunk = count_flops(call, i)
        flops.append(f)
        executed.append(len(chunk.executed()))
    return float(np.mean(flops)), float(np.mean(executed))


def profile_run(spec: "RunSpec", built: "Built", log: Callable[[str], None] = print,
                teacher: "Built | None" = None) -> dict[str, Any]:
    """Profile ``built.policy`` (and the suite's teacher, interleaved). Returns the metrics.json fields."""
    from harness.runner import build_policy

    out: dict[str, Any] = {"gflops_per_call": None, "gflops_per_action": None, "latency_ms": None, "cpu_ms": None,
                           "params": None, "peak_memory_mb": None, "vs_teacher": None}
    if built.method.privileged:
        out["profiling"] = {"skipped": "privileged scripted expert: reads simulator state, not a model"}
        return out
    rec = recording_for(spec, built, log)
    tasks = {t.name: t for t in built.suite.tasks()}
    policies = {"method": built.policy}
    teacher_id = built.teacher_id
    if teacher_id and teacher_id != built.method.method_id:
        try:
            from harness.specs import RunSpec

            # the teacher as the suite defines it: never with the run's overrides or debug config
            tspec = RunSpec(method=teacher_id, suite=spec.suite, device=spec.device, threads=spec.threads,
                            cache_dir=spec.cache_dir)
            teacher = teacher or build_policy(tspec, suite=built.suite)
            policies["teacher"] = teacher.policy
        except Exception as e:  # noqa: BLE001 — e.g. the teacher checkpoint is not trained yet
            log(f"[profile] teacher {teacher_id!r} unavailable, no vs_teacher: {type(e).__name__}: {e}")
    flops: dict[str, float] = {}
    per_action: dict[str, float] = {}
    for name, pol in policies.items():
        if pol.modules():
            f, k = flops_per_call(pol, rec, tasks)
            flops[name], per_action[name] = f / 1e9, f / 1e9 / max(k, 1e-9)
    lat = measure_interleaved({name: _replayer(pol, rec, tasks) for name, pol in policies.items()},
                              n_calls=spec.profile_calls, warmup=10, threads=spec.threads, device=spec.device)
    mem = peak_memory_mb(lambda: [_replayer(built.policy, rec, tasks)(i) for i in range(min(len(rec), 8))],
                         device=spec.device)
    m = lat["method"]
    out.update({
        "gflops_per_call": flops.get("method"), "gflops_per_action": per_action.get("method"),
        "latency_ms": m["latency_ms"], "cpu_ms": m["cpu_ms"],
        "params": count_params(built.policy.modules()) if built.policy.modules() else None,
        "peak_memory_mb": mem.get("extra_mb", mem.get("peak_allocated_mb")),
        "profiling": {**lat["_meta"], "n_observations": len(rec), "flops_convention": CONVENTION,
                      "memory": mem},
    })
    if "teacher" in policies:
        t = lat["teacher"]
        out["vs_teacher"] = {
            "teacher": teacher_id,
            "speedup": t["latency_ms"]["p50"] / m["latency_ms"]["p50"],
            "cpu_speedup": t["cpu_ms"]["p50"] / m["cpu_ms"]["p50"],
            "flops_ratio": (flops["method"] / flops["teacher"]) if flops.get("teacher") else None,
            "teacher_latency_ms": t["latency_ms"], "teacher_cpu_ms": t["cpu_ms"],
            "teacher_gflops_per_call": flops.get("teacher"),
        }
    return out
