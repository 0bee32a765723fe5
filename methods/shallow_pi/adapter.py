"""Method `shallow_pi`: layer-reduction distillation of the reference flow VLA (see README.md, distill.py)."""
from __future__ import annotations

import re
from typing import Any, ClassVar

from harness.interfaces import ConfigError, DataSource, Method, Policy
from methods.shallow_pi.config import ShallowPiConfig

VARIANT_RE = re.compile(r"^keep(\d+)(?:\+fastv(\d*\.?\d+))?$")


class ShallowPiMethod(Method):
    name = "shallow_pi"
    config_cls = ShallowPiConfig
    needs_teacher = True
    conformance_suite = "mock-v1"
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "keep9": {"keep_blocks": 9}, "keep6": {"keep_blocks": 6}, "keep4": {"keep_blocks": 4},
        "keep3": {"keep_blocks": 3}, "keep6+fastv0.5": {"keep_blocks": 6, "prune_keep": 0.5}}

    def variant_overrides(self, variant: str | None) -> dict[str, Any]:
        """``keep<k>`` (student blocks) and ``keep<k>+fastv<r>`` (FastV at keep ratio r on the student)."""
        if variant is None:
            return {}
        m = VARIANT_RE.match(variant)
        if m:
            out: dict[str, Any] = {"keep_blocks": int(m.group(1))}
            if m.group(2):
                out["prune_keep"] = float(m.group(2))
            return out
        return super().variant_overrides(variant)

    def distill(self, teacher: Policy | None, data: DataSource, config: ShallowPiConfig) -> Policy:
        from methods.reference import checkpoint as ckpt
        from methods.reference.adapter import ReferencePolicy
        from methods.shallow_pi.distill import distill
        from methods.token_pruning.adapter import anatomy_teacher

        if not 0.0 < config.prune_keep <= 1.0:
            raise ConfigError(f"shallow_pi.prune_keep must be in (0, 1], got {config.prune_keep}")
        base = anatomy_teacher(teacher, data, self.name)
        folder = distill(base, data.suite, data.cache_dir, config)
        model, tok, lang_tok, manifest = ckpt.load(folder)
        student = ReferencePolicy(model, tok, lang_tok, manifest, base.cfg)  # the teacher's inference settings
        student.artifact = str(folder)
        student.kept_teacher_layers = manifest["kept_teacher_layers"]
        if config.prune_keep < 1.0:
            from methods.token_pruning.config import FastVConfig
            from methods.token_pruning.pruning import FastVPolicy

            if not 0 <= config.prune_after < model.n_layers - 1:
                raise ConfigError(f"shallow_pi.prune_after must be in [0, {model.n_layers - 2}]")
            pol = FastVPolicy(student, FastVConfig(keep_ratio=config.prune_keep, prune_after=config.prune_after),
                              self.method_id)
            pol.artifact = student.artifact
            return pol
        return student
