"""Per-call latency: warm-up, then >= 100 timed calls, fixed thread count, wall and thread-CPU time.

Several callables are measured *interleaved* (A, B, A, B, ...) in one process, so their ratio is not
skewed by load that comes and goes on a shared machine. On CUDA, calls are timed with events + synchronize.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from harness.results.provenance import load_average
from harness.stats import percentiles


def _cuda_sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def measure_interleaved(calls: dict[str, Callable[[int], Any]], *, n_calls: int = 100, warmup: int = 10,
                        threads: int = 1, device: str = "cpu") -> dict[str, Any]:
    """``calls[name](i)`` performs the i-th inference call. Returns per-name wall/cpu percentiles (ms)."""
    import torch

    if n_calls < 1:
        raise ValueError(f"n_calls must be >= 1, got {n_calls}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    wall: dict[str, list[float]] = {k: [] for k in calls}
    cpu: dict[str, list[float]] = {k: [] for k in calls}
    load_before = load_average()
    cuda = device.startswith("cuda")
    try:
        with torch.inference_mode():
            for i in range(warmup):
                for fn in calls.values():
                    fn(i)
            _cuda_sync(device)
            for i in range(n_calls):
                for name, fn in calls.items():
                    if cuda:
                        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                        c0 = time.thread_time()
                        start.record()
                        fn(warmup + i)
                        end.record()
                        torch.cuda.synchronize()
                        wall[name].append(start.elapsed_time(end))
                        cpu[name].append((time.thread_time() - c0) * 1e3)
                    else:
                        c0, w0 = time.thread_time(), time.perf_counter()
                        fn(warmup + i)
                        w1, c1 = time.perf_counter(), time.thread_time()
                        wall[name].append((w1 - w0) * 1e3)
                        cpu[name].append((c1 - c0) * 1e3)
    finally:
        torch.set_num_threads(previous_threads)
    out: dict[str, Any] = {}
    for name in calls:
        out[name] = {"latency_ms": percentiles(wall[name]), "cpu_ms": percentiles(cpu[name])}
    out["_meta"] = {"n_calls": n_calls, "warmup": warmup, "threads": threads, "device": device,
                    "interleaved": list(calls), "load_average_before": load_before,
                    "load_average_after": load_average(),
                    "timer": "cuda events + synchronize" if cuda else "perf_counter (wall) + thread_time (cpu)"}
    return out
