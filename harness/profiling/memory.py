"""Parameter counts and peak memory of inference calls.

CPU: the process's peak resident set (VmHWM) is reset through /proc/self/clear_refs before the calls and
read after, minus the resident set before — the extra memory inference needed on top of what was loaded.
CUDA: torch.cuda.max_memory_allocated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable


def count_params(modules: Iterable[Any]) -> int:
    seen: set[int] = set()
    total = 0
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def param_bytes(modules: Iterable[Any]) -> int:
    seen: set[int] = set()
    total = 0
    for m in modules:
        for t in [*m.parameters(), *m.buffers()]:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_memory_mb(fn: Callable[[], Any], device: str = "cpu") -> dict[str, float | None]:
    """Run ``fn`` and return {"peak_rss_mb", "extra_mb"} (CPU) or {"peak_allocated_mb"} (CUDA)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return {"peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20}
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    before = _status_kb("VmRSS")
    fn()
    peak = _status_kb("VmHWM")
    if peak is None or before is None:
        return {"peak_rss_mb": None, "extra_mb": None}
    return {"peak_rss_mb": peak / 1024, "extra_mb": max(0, peak - before) / 1024}
