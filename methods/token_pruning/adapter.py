"""Methods `fastv`, `sparsevlm`, `vla_cache`, `random`: training-free — ``distill`` wraps the suite's teacher.

Configs live in one ``configs/default.yaml`` / ``configs/debug.yaml`` with a section per method name.
Variants ``keep<r>`` (e.g. ``fastv@keep0.25``) set ``keep_ratio = r``.
"""
from __future__ import annotations

import re
import sys
from abc import abstractmethod
from typing import Any, ClassVar

import yaml

from harness.interfaces import ConfigError, DataSource, Method, MethodConfig, Policy, load_config
from methods.token_pruning.config import FastVConfig, RandomPruneConfig, SparseVLMConfig, VLACacheConfig

KEEP_RE = re.compile(r"^keep(\d+(?:\.\d*)?|\.\d+)$")


def parse_keep(variant: str) -> float | None:
    m = KEEP_RE.match(variant)
    if not m:
        return None
    r = float(m.group(1))
    if not 0.0 <= r <= 1.0:
        raise ConfigError(f"variant {variant!r}: keep ratio must be in [0, 1]")
    return r


def anatomy_teacher(teacher: Policy | None, data: DataSource, who: str) -> Any:
    """The teacher as a reference-style policy (``.model`` implementing the anatomy, ``inputs``/``noise``/
    ``postprocess``). When the suite's teacher is something else (mock-v1 before its teacher is switched to
    ``reference``), the suite's reference checkpoint is loaded instead and a warning is printed."""
    from harness.anatomy import VLAAnatomy

    def ok(p: Any) -> bool:
        return p is not None and isinstance(getattr(p, "model", None), VLAAnatomy) and all(
            hasattr(p, a) for a in ("inputs", "noise", "postprocess"))

    if ok(teacher):
        return teacher
    from harness.plugins import make_method

    ref = make_method("reference")
    cfg = ref.config(data.suite.suite_id)
    pol = ref.distill(None, data, cfg)
    print(f"[{who}] WARNING: the suite's teacher ({type(teacher).__name__}) does not implement the model anatomy; "
          f"using the `reference` checkpoint of {data.suite.suite_id} instead", file=sys.stderr)
    return pol


class KeepRatioMethod(Method):
    """Shared: per-method config sections, ``keep<r>`` variants (not registered itself)."""

    name = "_keep_ratio_base"

    variants: ClassVar[dict[str, dict[str, Any]]] = {
        f"keep{r}": {"keep_ratio": r} for r in (0.75, 0.5, 0.25, 0.1, 1.0)}
    needs_teacher = True
    conformance_suite = "mock-v1"

    def variant_overrides(self, variant: str | None) -> dict[str, Any]:
        if variant is None:
            return {}
        r = parse_keep(variant)
        if r is not None:
            return {"keep_ratio": r}
        return super().variant_overrides(variant)

    def config(self, suite_id: str, debug: bool = False, overrides: dict[str, Any] | None = None) -> MethodConfig:
        path = self.config_dir() / ("debug.yaml" if debug else "default.yaml")
        sources: list[Any] = []
        if path.exists():
            data = (yaml.safe_load(path.read_text()) or {}).get(self.name, {}) or {}
            data = dict(data)
            per_suite = data.pop("per_suite", {}) or {}
            sources.append(data)
            for key, section in per_suite.items():
                if suite_id == key or suite_id.startswith(key):
                    sources.append(section)
        sources.append(self.variant_overrides(self.variant))
        sources.append(overrides)
        return load_config(self.config_cls, *sources)

    @abstractmethod
    def make_policy(self, base: Any, config: Any) -> Policy:
        """The method's policy around ``base`` (a reference-style policy)."""

    def distill(self, teacher: Policy | None, data: DataSource, config: Any) -> Policy:
        if not 0.0 <= config.keep_ratio <= 1.0:
            raise ConfigError(f"{self.name}.keep_ratio must be in [0, 1], got {config.keep_ratio}")
        base = anatomy_teacher(teacher, data, self.name)
        return self.make_policy(base, config)


class FastVMethod(KeepRatioMethod):
    name = "fastv"
    config_cls = FastVConfig

    def make_policy(self, base, config):
        from methods.token_pruning.pruning import FastVPolicy

        if not 0 <= config.prune_after < base.model.n_layers - 1:
            raise ConfigError(f"fastv.prune_after must be in [0, {base.model.n_layers - 2}]")
        return FastVPolicy(base, config, self.method_id)


class SparseVLMMethod(KeepRatioMethod):
    name = "sparsevlm"
    config_cls = SparseVLMConfig

    def make_policy(self, base, config):
        from methods.token_pruning.pruning import SparseVLMPolicy

        if not config.prune_layers:
            raise ConfigError("sparsevlm.prune_layers is empty")
        return SparseVLMPolicy(base, config, self.method_id)


class VLACacheMethod(KeepRatioMethod):
    name = "vla_cache"
    config_cls = VLACacheConfig

    def make_policy(self, base, config):
        from methods.token_pruning.pruning import VLACachePolicy

        return VLACachePolicy(base, config, self.method_id)


class RandomPruneMethod(KeepRatioMethod):
    name = "random"
    config_cls = RandomPruneConfig

    def make_policy(self, base, config):
        from methods.token_pruning.pruning import RandomPrunePolicy

        if not 0 <= config.prune_after < base.model.n_layers - 1:
            raise ConfigError(f"random.prune_after must be in [0, {base.model.n_layers - 2}]")
        return RandomPrunePolicy(base, config, self.method_id)
