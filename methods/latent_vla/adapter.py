"""Method `latent_vla`: the compact student distilled from a latent-action-pretrained VLA; `latent_vla@vla`
evaluates that VLA itself (stage 2), so the student's cost and success can be read against it."""
from __future__ import annotations

from typing import Any, ClassVar

from harness.interfaces import DataSource, Method, Policy
from methods.latent_vla.config import LatentVLAConfig


class LatentVLAMethod(Method):
    name = "latent_vla"
    config_cls = LatentVLAConfig
    needs_teacher = True
    variants: ClassVar[dict[str, dict[str, Any]]] = {"vla": {"stage": "vla"}, "student": {"stage": "student"}}

    def distill(self, teacher: Policy | None, data: DataSource, config: LatentVLAConfig) -> Policy:
        from methods.latent_vla.distill import distill
        from methods.rt_vla.adapter import RTPolicy
        from methods.rt_vla.config import RTVLAConfig
        from methods.rt_vla.distill import load

        if teacher is None or not hasattr(teacher, "model"):
            raise ValueError(f"latent_vla starts from a reference VLA teacher; got {type(teacher).__name__}")
        if config.stage not in ("student", "vla"):
            raise ValueError(f"stage must be 'student' or 'vla', got {config.stage!r}")
        folder = distill(teacher, data.suite, data.cache_dir, config)
        if config.stage == "vla":
            from methods.reference.adapter import ReferencePolicy
            from methods.reference.checkpoint import load as load_ref
            from methods.reference.config import ReferenceConfig

            model, tok, _, manifest = load_ref(folder / "vla")
            return ReferencePolicy(model, tok, None, manifest, ReferenceConfig(n_execute=config.n_execute, clip=0.0))
        student, manifest = load(folder)
        return RTPolicy(student, manifest, RTVLAConfig(n_execute=config.n_execute), folder)
