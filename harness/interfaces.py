"""The public contracts every method and suite plugs into.

Observation (a plain dict, the same keys in every suite)::

    obs = {
        "images": {"agentview": uint8 HxWx3, "wrist": uint8 HxWx3},   # upright, RGB
        "proprio": float32 (P,),                                       # suite-documented layout
        "instruction": str,
        "privileged": Any,   # ONLY when the method declares privileged=True (scripted experts)
    }

A policy answers one ``infer(obs)`` with an :class:`ActionChunk` of ``k`` actions; the runner executes
``chunk.n_execute`` of them (default: all) before asking again. Suites expose Gymnasium environments whose
``reset(seed=..., options={"episode": EpisodeSpec})`` places the episode's fixed initial state and whose
``info["success"]`` is the environment's own success check.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

import numpy as np
import yaml

if TYPE_CHECKING:  # keep this module importable without torch or gymnasium loaded
    import gymnasium as gym
    import torch

Obs = dict[str, Any]

PROFILES = ("full", "quick", "smoke")
REPORTABLE_PROFILES = frozenset({"full"})


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from (suite id, task, trial, ...): the same on every machine and process."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def parse_value(text: str) -> Any:
    """A command-line value (``--set key=value``) as YAML, except that number-like strings YAML 1.1 leaves as text
    (``3e-4``, ``1e5``: no dot) become floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "+inf") else value
        except ValueError:
            return value
    return value


@dataclass(frozen=True)
class Task:
    """One task of a suite. ``name`` is unique within the suite and stable across versions of the id."""

    name: str
    instruction: str
    index: int = 0
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that fixes one episode: the same spec gives the same initial state to every method."""

    episode_id: str  # "<task name>/<trial:03d>" — unique within a suite id
    task: Task
    trial: int  # index of the fixed initial state / scenario seed within the task
    seed: int
    max_steps: int

    def to_dict(self) -> dict[str, Any]:
        return {"episode_id": self.episode_id, "task": self.task.name, "trial": self.trial,
                "seed": self.seed, "max_steps": self.max_steps}


@dataclass(frozen=True)
class Profile:
    """An evaluation profile. Only ``full`` (the published protocol) is reportable."""

    name: str
    trials_per_task: int
    tasks: tuple[str, ...] | None = None  # None = all tasks of the suite
    max_steps: int | None = None  # None = the protocol's value
    first_trial: int = 0

    @property
    def reportable(self) -> bool:
        return self.name in REPORTABLE_PROFILES


@dataclass
class ActionChunk:
    """What one ``Policy.infer`` call returns.

    ``actions``: float array (k, action_dim). ``n_execute``: how many to run before the next call
    (None = all k). ``extras``: JSON-able per-call information — e.g. ``text`` (a generated explanation),
    ``blocks_executed`` (list of block indices), ``tokens_kept`` (int).
    """

    actions: np.ndarray
    n_execute: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def executed(self) -> np.ndarray:
        k = len(self.actions) if self.n_execute is None else max(1, min(self.n_execute, len(self.actions)))
        return self.actions[:k]


@dataclass
class EpisodeResult:
    """One line of ``episodes.jsonl``. ``error`` is None for an episode that ran to its end."""

    episode_id: str
    task: str
    trial: int
    seed: int
    success: bool
    steps: int
    error: str | None = None
    infer_calls: int = 0
    wall_s: float = 0.0
    instruction: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # suite-specific per-episode metrics
    method_stats: dict[str, Any] = field(default_factory=dict)  # e.g. router usage, tokens kept
    worker: int = 0
    finished_at: float = 0.0  # unix time the episode ended (throughput and ETA; not an outcome)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EpisodeResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Policy(ABC):
    """A controller for one episode at a time. Deterministic given ``reset(task, seed)`` and the obs."""

    #: actions executed per infer call on average (for gflops_per_action); set by the policy.
    actions_per_call: float = 1.0

    @abstractmethod
    def reset(self, task: Task, seed: int) -> None:
        """Start an episode: clear any state (caches, RNG) and remember the task."""

    @abstractmethod
    def infer(self, obs: Obs) -> ActionChunk:
        """Map an observation to an action chunk."""

    def modules(self) -> list["torch.nn.Module"]:
        """The torch modules that run at inference (for parameter counts and device moves)."""
        return []

    def episode_stats(self) -> dict[str, Any]:
        """JSON-able statistics of the episode just finished (router usage, tokens kept, ...)."""
        return {}

    def to(self, device: str) -> "Policy":
        for m in self.modules():
            m.to(device)
        return self


class DataSource:
    """What ``Method.distill`` trains on: the suite, its demonstrations and a cache folder.

    ``demos()`` returns the suite's demonstration dataset (generated by ``make demos`` if absent and
    the suite supports it). Training-free methods never call it.
    """

    def __init__(self, suite: "Suite", cache_dir: Path, device: str = "cpu"):
        self.suite, self.cache_dir, self.device = suite, Path(cache_dir), device

    def demos(self) -> Any:
        return self.suite.demonstrations()


@dataclass
class MethodConfig:
    """Base for method configs: typed dataclasses with defaults from the paper."""

    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_config(cls: type[MethodConfig], *sources: dict[str, Any] | Path | str | None) -> MethodConfig:
    """Build a config from YAML files / dicts applied in order; an unknown or ill-typed field is named."""
    values: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for src in sources:
        if src is None:
            continue
        if isinstance(src, (str, Path)):
            path = Path(src)
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML: {e}") from None
            where = str(path)
        else:
            data, where = src, "overrides"
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping of field: value, got {type(data).__name__}")
        for key, value in data.items():
            if key not in fields:
                import difflib

                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{where}: unknown field {key!r} for {cls.__name__}{hint}")
            values[key] = value
    try:
        cfg = cls(**values)
    except TypeError as e:
        raise ConfigError(f"{cls.__name__}: {e}") from None
    _check_types(cfg)
    return cfg


def _check_types(cfg: Any) -> None:
    import typing

    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, hint = getattr(cfg, f.name), hints.get(f.name)
        simple = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}
        if hint in simple and (not isinstance(value, simple[hint]) or (hint is not bool and isinstance(value, bool))):
            raise ConfigError(f"{type(cfg).__name__}.{f.name}: expected {hint.__name__}, got {value!r}")


class ConfigError(ValueError):
    """A malformed config; the message names the field."""


class SuiteUnavailableError(RuntimeError):
    """The suite is installed but cannot run on this machine (e.g. simulator assets are absent).
    The message says exactly what to do; tests skip such suites with it."""


class MissingArtifactError(FileNotFoundError):
    """A prerequisite artifact (a teacher checkpoint, demonstrations) does not exist yet. The message names what is
    missing and the `make` command that produces it; the CLI prints it and exits 2 instead of a traceback."""


class Method(ABC):
    """A compression method (or a reference model / expert) — the common distill/infer interface.

    Subclasses live in ``methods/<name>/adapter.py`` beside ``config.py`` and ``configs/{default,debug}.yaml``.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    #: method ids (``name@variant``) -> config overrides; ``check_variant`` accepts these.
    variants: ClassVar[dict[str, dict[str, Any]]] = {}
    needs_teacher: ClassVar[bool] = False  # distill receives the suite's teacher policy
    privileged: ClassVar[bool] = False  # receives obs["privileged"] (scripted experts only)
    #: suite ids (or prefixes like "libero") this method supports; None = all
    suites: ClassVar[tuple[str, ...] | None] = None

    #: the cheapest suite on which the conformance test distils (debug config) and runs this method
    conformance_suite: ClassVar[str] = "mock-v1"

    variant: str | None = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if not getattr(cls, "__abstractmethods__", None) and not isinstance(getattr(cls, "name", None), str):
            raise TypeError(f"{cls.__qualname__} must set a class attribute `name`")

    @property
    def method_id(self) -> str:
        return self.name if self.variant is None else f"{self.name}@{self.variant}"

    def check_variant(self, variant: str) -> None:
        self.variant_overrides(variant)

    def variant_overrides(self, variant: str | None) -> dict[str, Any]:
        """Config overrides for ``variant``; override to parse parametric variants such as ``keep0.5``."""
        if variant is None:
            return {}
        if variant in self.variants:
            return dict(self.variants[variant])
        from harness.registry import UnknownNameError

        raise UnknownNameError(f"variant of {self.name}", variant, list(self.variants))

    def config_dir(self) -> Path:
        import inspect

        return Path(inspect.getfile(type(self))).parent / "configs"

    def config(self, suite_id: str, debug: bool = False, overrides: dict[str, Any] | None = None) -> MethodConfig:
        """default.yaml (or debug.yaml), then per-suite-family section, then variant, then explicit overrides."""
        base = self.config_dir() / ("debug.yaml" if debug else "default.yaml")
        sources: list[Any] = []
        if base.exists():
            data = yaml.safe_load(base.read_text()) or {}
            per_suite = data.pop("per_suite", {}) or {}
            sources.append(data)
            for key, section in per_suite.items():  # e.g. per_suite: {libero: {...}, driving: {...}}
                if suite_id == key or suite_id.startswith(key):
                    sources.append(section)
        sources.append(self.variant_overrides(self.variant))
        sources.append(overrides)
        return load_config(self.config_cls, *sources)

    def supports(self, suite_id: str) -> bool:
        return self.suites is None or any(suite_id == s or suite_id.startswith(s) for s in self.suites)

    @abstractmethod
    def distill(self, teacher: Policy | None, data: DataSource, config: MethodConfig) -> Policy:
        """Train (or wrap) and return the policy. Training methods cache their artifact by hash of
        (teacher, data, config) under ``data.cache_dir`` and only load it when it exists."""


class Suite(ABC):
    """A versioned benchmark suite: tasks, a protocol (``protocol.yaml``), profiles and an env factory."""

    suite_id: str
    description: str = ""
    #: method id of the suite's reference teacher (e.g. "reference"); None when there is none yet.
    teacher: str | None = None
    #: the camera names and proprio size the observations carry
    cameras: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._protocol: dict[str, Any] | None = None

    # ----- protocol and profiles -----
    def protocol_path(self) -> Path:
        import inspect

        return Path(inspect.getfile(type(self))).parent / "protocol.yaml"

    @property
    def protocol(self) -> dict[str, Any]:
        if self._protocol is None:
            self._protocol = yaml.safe_load(self.protocol_path().read_text()) or {}
        return self._protocol

    @abstractmethod
    def tasks(self) -> list[Task]:
        ...

    @abstractmethod
    def profiles(self) -> dict[str, Profile]:
        """``{"full": Profile(...), "quick": ..., "smoke": ...}``; ``full`` is the published protocol."""

    @abstractmethod
    def max_steps(self, task: Task) -> int:
        ...

    def profile(self, name: str) -> Profile:
        profiles = self.profiles()
        if name not in profiles:
            from harness.registry import UnknownNameError

            raise UnknownNameError(f"profile of {self.suite_id}", name, list(profiles))
        return profiles[name]

    def episode_seed(self, task: Task, trial: int) -> int:
        """Per-episode seed; override when the protocol fixes one (LIBERO: the init-state index decides)."""
        return derive_seed(self.suite_id, task.name, trial)

    def episodes(self, profile: str) -> list[EpisodeSpec]:
        prof = self.profile(profile)
        tasks = self.tasks()
        if prof.tasks is not None:
            by_name = {t.name: t for t in tasks}
            tasks = [by_name[n] for n in prof.tasks]
        out = []
        for task in tasks:
            steps = prof.max_steps or self.max_steps(task)
            for trial in range(prof.first_trial, prof.first_trial + prof.trials_per_task):
                out.append(EpisodeSpec(f"{task.name}/{trial:03d}", task, trial, self.episode_seed(task, trial), steps))
        return out

    # ----- environments -----
    @abstractmethod
    def make_env(self, task: Task, *, privileged: bool = False, **options: Any) -> "gym.Env":
        """A Gymnasium env for ``task``; reused across that task's episodes.

        ``reset(seed=spec.seed, options={"episode": spec})`` must put the env in the episode's initial
        state; ``step`` returns ``info["success"]``; with ``privileged`` the obs carry ``"privileged"``.
        Optionally the env implements ``episode_metrics() -> dict`` (called after each episode).
        """

    def aggregate(self, episodes: Iterable[EpisodeResult]) -> dict[str, Any]:
        """Suite-specific metrics over episodes (the ``suite_metrics`` of metrics.json)."""
        return {}

    def provenance(self) -> dict[str, Any]:
        """Simulator versions, render backend and settings: recorded in every run.json."""
        return {}

    def expert(self) -> Policy:
        """The suite's privileged scripted expert (served as method ``expert``)."""
        raise NotImplementedError(f"suite {self.suite_id} has no scripted expert")

    def demonstrations(self) -> Any:
        """The expert demonstrations dataset for teacher training / distillation."""
        raise NotImplementedError(f"suite {self.suite_id} has no demonstrations; see `make demos`")

    def close(self) -> None:
        pass
