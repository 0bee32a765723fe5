"""RunSpec: the frozen, hashable description of one evaluation run."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.interfaces import PROFILES, ConfigError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class RunSpec:
    method: str  # method id, "name" or "name@variant"
    suite: str  # suite id, e.g. "libero_object-v1"
    profile: str = "smoke"
    results: str = "results"
    workers: int = 1
    executor: str = "local"
    device: str = "cpu"
    threads: int = 1  # torch threads per process; latency is measured single-threaded
    debug: bool = False  # method's debug config (trains in seconds; never reportable)
    overrides: tuple[tuple[str, Any], ...] = ()  # method config overrides, as sorted pairs
    episode_timeout_s: float = 1800.0  # wall-clock limit per episode
    limit: int | None = None  # run only the first N episodes of the profile (never reportable)
    profile_calls: int = 100  # timed infer calls for latency (>= 100 for reported figures)
    skip_profile: bool = False
    cache_dir: str = ".cache"
    teacher: str | None = None  # method id replacing the suite's teacher (e.g. "openvla"); part of the run identity
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if isinstance(self.method, str):
            from harness.plugins import canonical_method_id  # aliases (`teacher` -> `reference`) resolved here

            object.__setattr__(self, "method", canonical_method_id(self.method))
        if isinstance(self.suite, str):
            from harness.plugins import canonical_suite_id  # `libero_object` -> `libero_object-v1`

            object.__setattr__(self, "suite", canonical_suite_id(self.suite))
        if self.teacher is not None:
            from harness.plugins import canonical_method_id

            object.__setattr__(self, "teacher", canonical_method_id(self.teacher) if self.teacher else None)
        if self.profile not in PROFILES:
            from harness.registry import UnknownNameError

            raise UnknownNameError("profile", self.profile, list(PROFILES))
        if self.executor not in EXECUTORS:
            from harness.registry import UnknownNameError

            raise UnknownNameError("executor", self.executor, list(EXECUTORS))
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers must be a positive integer, got {self.workers!r}")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"device {self.device!r} is not supported; use 'cpu' or 'cuda[:N]'")

    @property
    def reportable(self) -> bool:
        return self.profile == "full" and not self.debug and self.limit is None and not self.overrides

    def identity(self, method_config_digest: str, protocol_digest: str) -> dict[str, Any]:
        """What decides the outcomes — and so the run id. Workers, executor and results path do not."""
        ident = {"method": self.method, "suite": self.suite, "profile": self.profile, "device": self.device,
                 "debug": self.debug, "limit": self.limit, "method_config": method_config_digest,
                 "protocol": protocol_digest}
        if self.teacher:  # only when overridden: run ids of runs with the suite's own teacher are unchanged
            ident["teacher"] = self.teacher
        return ident

    def run_id(self, method_config_digest: str, protocol_digest: str) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(method_config_digest, protocol_digest),
                                           sort_keys=True).encode()).hexdigest()[:10]
        tag = self.profile + ("-debug" if self.debug else "") + (f"-limit{self.limit}" if self.limit else "")
        return f"{tag}-{digest}"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["overrides"] = dict(self.overrides)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunSpec":
        d = dict(d)
        d["overrides"] = tuple(sorted((d.get("overrides") or {}).items()))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def run_dir_root(self) -> Path:
        return Path(self.results)


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12] if Path(path).exists() else "none"
