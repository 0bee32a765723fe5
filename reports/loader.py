"""Read a results folder into run records and pick the run each table shows.

Everything the reporter, the paper tables and the gate print comes from here: run.json, episodes.jsonl
(the per-episode source of truth) and metrics.json (profiling figures that are not per episode).
Selection rule: per (suite, method, profile) the latest *complete* run (by metrics.json ``updated_at``);
keys with no complete run are listed as in progress. Nothing is re-run and nothing is fetched.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.results.schema import SchemaError
from harness.results.store import RunDir, iter_runs
from harness.stats import wilson


class ResultsError(ValueError):
    """A results folder that cannot be read (missing, empty, or a malformed file); names the path."""


@dataclass
class Run:
    path: Path
    run: dict
    episodes: list[dict]
    metrics: dict | None  # None while the run is in progress (no metrics.json yet)

    # ----- identity -----
    @property
    def suite(self) -> str:
        return self.metrics["suite"] if self.metrics else self.run["spec"]["suite"]

    @property
    def method(self) -> str:
        return self.metrics["method"] if self.metrics else self.path.parent.name

    @property
    def profile(self) -> str:
        return self.metrics["profile"] if self.metrics else self.run["spec"].get("profile", "?")

    @property
    def run_id(self) -> str:
        return self.run["run_id"]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.suite, self.method, self.profile)

    @property
    def device(self) -> str:
        return (self.metrics or {}).get("device") or self.run["spec"].get("device", "cpu")

    @property
    def complete(self) -> bool:
        return bool(self.metrics and self.metrics.get("complete"))

    @property
    def reportable(self) -> bool:
        if self.metrics is not None:
            return bool(self.metrics["reportable"])
        return bool(self.run.get("reportable", False))

    @property
    def updated_at(self) -> str:
        return (self.metrics or {}).get("updated_at") or self.run.get("finished_at") or self.run["started_at"]

    @property
    def teacher(self) -> str | None:
        m = self.metrics or {}
        return m.get("teacher") or (m.get("vs_teacher") or {}).get("teacher")

    @property
    def weights(self) -> str | None:
        """weights_sha256_12 of the policy that ran (None: no torch modules, e.g. the scripted expert)."""
        return self.run.get("weights_sha256_12")

    @property
    def teacher_weights(self) -> str | None:
        """weights_sha256_12 of the teacher this run's policy was distilled from (absent in runs before 2026-12-07)."""
        return self.run.get("teacher_weights_sha256_12")

    @property
    def method_name(self) -> str:
        return self.method.partition("@")[0]

    @property
    def variant(self) -> str | None:
        return self.method.partition("@")[2] or None

    # ----- figures recomputed from episodes.jsonl -----
    @property
    def n(self) -> int:
        return len(self.episodes)

    @property
    def successes(self) -> int:
        return sum(1 for e in self.episodes if e["success"])

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.n if self.n else None

    @property
    def success_ci95(self) -> tuple[float, float]:
        return wilson(self.successes, self.n)

    def per_task(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for e in self.episodes:
            t = out.setdefault(e["task"], {"n": 0, "successes": 0, "errors": 0,
                                           "instruction": e.get("instruction", "")})
            t["n"] += 1
            t["successes"] += int(e["success"])
            t["errors"] += int(e["error"] is not None)
        for t in out.values():
            t["success_rate"] = t["successes"] / t["n"]
            t["success_ci95"] = list(wilson(t["successes"], t["n"]))
        return dict(sorted(out.items()))

    def outcomes(self) -> dict[str, bool]:
        return {e["episode_id"]: bool(e["success"]) for e in self.episodes}


@dataclass
class Broken:
    path: Path
    error: str


@dataclass
class Results:
    root: Path
    runs: list[Run] = field(default_factory=list)
    broken: list[Broken] = field(default_factory=list)
    profiles: list[dict] = field(default_factory=list)  # profile-<device>.json records from `vla-bench profile`

    def suites(self) -> list[str]:
        return sorted({r.suite for r in self.runs})

    def runs_for(self, key: tuple[str, str, str]) -> list[Run]:
        return sorted((r for r in self.runs if r.key == key), key=lambda r: r.updated_at, reverse=True)

    def keys(self, suite: str | None = None) -> list[tuple[str, str, str]]:
        return sorted({r.key for r in self.runs if suite is None or r.suite == suite})

    def selected(self, suite: str | None = None) -> list[Selection]:
        """One entry per (suite, method, profile): the latest complete run, or the latest partial one."""
        out = []
        for key in self.keys(suite):
            runs = self.runs_for(key)
            complete = [r for r in runs if r.complete]
            out.append(Selection(key, complete[0] if complete else runs[0], runs, bool(complete)))
        return out

    def latest_complete(self, suite: str, method: str, profile: str | None = None) -> Run | None:
        cands = [r for r in self.runs if r.suite == suite and r.method == method and r.complete
                 and (profile is None or r.profile == profile)]
        return max(cands, key=lambda r: r.updated_at) if cands else None


@dataclass
class Selection:
    key: tuple[str, str, str]
    run: Run
    all_runs: list[Run]
    complete: bool

    @property
    def note(self) -> str:
        n = len(self.all_runs)
        if not self.complete:
            return f"no complete run yet: showing the latest partial run ({self.run.n} episodes so far)"
        if n == 1:
            return "1 run"
        return f"latest complete of {n} runs (by updated_at)"


def load_run(rd: RunDir) -> Run:
    run = rd.read_run()
    episodes = rd.read_episodes()
    metrics = rd.read_metrics() if rd.metrics_json.exists() else None
    return Run(rd.path, run, episodes, metrics)


def load_results(root: Path | str, *, strict: bool = False) -> Results:
    """Every run under ``root`` (``root`` may also be one run folder). ``strict``: a bad file raises
    ResultsError naming it; otherwise it is listed in ``broken`` and the rest is still reported."""
    root = Path(root)
    if not root.exists():
        raise ResultsError(f"results folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise ResultsError(f"results path {str(root)!r} is not a folder")
    res = Results(root)
    dirs: Iterable[RunDir] = [RunDir(root)] if (root / "run.json").exists() else iter_runs(root)
    for rd in dirs:
        try:
            res.runs.append(load_run(rd))
        except (SchemaError, json.JSONDecodeError, KeyError, OSError) as e:
            if strict:
                raise ResultsError(f"{rd.path}: {type(e).__name__}: {e}") from e
            res.broken.append(Broken(rd.path, f"{type(e).__name__}: {e}"))
    for prof in sorted(root.glob("*/*/profile-*.json")):
        try:
            rec = json.loads(prof.read_text())
            rec["_path"] = str(prof)
            res.profiles.append(rec)
        except (json.JSONDecodeError, OSError) as e:
            res.broken.append(Broken(prof, f"{type(e).__name__}: {e}"))
    return res
