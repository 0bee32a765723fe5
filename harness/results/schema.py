"""Versioned schema of the three result files, validated on write and on read.

    RESULTS/<suite_id>/<method_id>/<run_id>/run.json        spec + provenance (written first)
    RESULTS/<suite_id>/<method_id>/<run_id>/episodes.jsonl  one EpisodeResult per line, flushed per episode
    RESULTS/<suite_id>/<method_id>/<run_id>/metrics.json    aggregate figures

A field spec is ``name: (types, required)``; nested dicts have their own spec. Changing a field's meaning
bumps SCHEMA_VERSION and adds a migration in ``migrate``.
"""
from __future__ import annotations

from typing import Any

SCHEMA_VERSION = 1

NUM = (int, float)
OPT_NUM = (int, float, type(None))

LATENCY_SPEC = {"p50": (NUM, True), "p90": (NUM, True), "p99": (NUM, True), "mean": (NUM, True)}

EPISODE_SPEC: dict[str, tuple[tuple[type, ...] | type, bool]] = {
    "episode_id": (str, True),
    "task": (str, True),
    "trial": (int, True),
    "seed": (int, True),
    "success": (bool, True),
    "steps": (int, True),
    "error": ((str, type(None)), True),
    "infer_calls": (int, False),
    "wall_s": (NUM, False),
    "instruction": (str, False),
    "metrics": (dict, False),
    "method_stats": (dict, False),
    "worker": (int, False),
    "finished_at": (NUM, False),
}

RUN_SPEC = {
    "schema_version": (int, True),
    "run_id": (str, True),
    "spec": (dict, True),
    "provenance": (dict, True),
    "started_at": (str, True),
}

PROVENANCE_KEYS = ("git_commit", "git_dirty", "packages", "config_hash", "host", "threads", "python")

METRICS_SPEC = {
    "schema_version": (int, True),
    "method": (str, True),
    "suite": (str, True),
    "profile": (str, True),
    "reportable": (bool, True),
    "run_id": (str, True),
    "n_episodes": (int, True),
    "n_errors": (int, True),
    "success_rate": (NUM, True),
    "success_ci95": (list, True),
    "per_task": (dict, True),
    "gflops_per_call": (OPT_NUM, True),
    "gflops_per_action": (OPT_NUM, True),
    "latency_ms": ((dict, type(None)), True),
    "cpu_ms": ((dict, type(None)), True),
    "params": ((int, type(None)), True),
    "peak_memory_mb": (OPT_NUM, False),
    "device": (str, True),
    "threads": (int, True),
    "suite_metrics": (dict, True),
    "method_stats": (dict, False),
    "vs_teacher": ((dict, type(None)), True),
    "complete": (bool, True),
    "updated_at": (str, True),
}


class SchemaError(ValueError):
    """A result file that does not match the schema; the message names the file and the field."""


def _check(obj: Any, spec: dict, where: str) -> None:
    if not isinstance(obj, dict):
        raise SchemaError(f"{where}: expected an object, got {type(obj).__name__}")
    for key, (types, required) in spec.items():
        if key not in obj:
            if required:
                raise SchemaError(f"{where}: missing field {key!r}")
            continue
        value = obj[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
            raise SchemaError(f"{where}: field {key!r} has {type(value).__name__} {value!r:.80}, "
                              f"expected {' or '.join(t.__name__ for t in _as_tuple(types))}")


def _as_tuple(types: Any) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def validate_episode(obj: Any, where: str = "episode") -> dict:
    _check(obj, EPISODE_SPEC, where)
    return obj


def validate_run(obj: Any, where: str = "run.json") -> dict:
    obj = migrate(obj, where)
    _check(obj, RUN_SPEC, where)
    missing = [k for k in PROVENANCE_KEYS if k not in obj["provenance"]]
    if missing:
        raise SchemaError(f"{where}: provenance lacks {missing}")
    return obj


def validate_metrics(obj: Any, where: str = "metrics.json") -> dict:
    obj = migrate(obj, where)
    _check(obj, METRICS_SPEC, where)
    lo_hi = obj["success_ci95"]
    if len(lo_hi) != 2 or not all(isinstance(v, NUM) for v in lo_hi):
        raise SchemaError(f"{where}: success_ci95 must be [low, high], got {lo_hi!r}")
    if not 0.0 <= obj["success_rate"] <= 1.0:
        raise SchemaError(f"{where}: success_rate {obj['success_rate']!r} is outside [0, 1]")
    for key in ("latency_ms", "cpu_ms"):
        if obj[key] is not None:
            _check(obj[key], LATENCY_SPEC, f"{where}:{key}")
    if obj["vs_teacher"] is not None:
        _check(obj["vs_teacher"], {"teacher": (str, True), "speedup": (OPT_NUM, True),
                                   "flops_ratio": (OPT_NUM, True)}, f"{where}:vs_teacher")
    return obj


def migrate(obj: Any, where: str) -> Any:
    """Bring an older result file up to SCHEMA_VERSION (none exist yet), or refuse a newer one."""
    if isinstance(obj, dict):
        version = obj.get("schema_version")
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise SchemaError(f"{where}: schema_version {version} is newer than this code ({SCHEMA_VERSION}); "
                              "update vla-bench")
    return obj
