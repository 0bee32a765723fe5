"""Method `openvla`: an OpenVLA checkpoint as a policy (and as a teacher: ``TEACHER=openvla``).

``distill`` loads the checkpoint (nothing is trained); the policy exposes the model anatomy, so FastV / SparseVLM /
VLA-Cache / random pruning wrap it unchanged. See README.md for the weight mapping and how to run real weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.interfaces import DataSource, Method, Policy
from methods.openvla.common import AdapterMethod, AdapterPolicy, probe_suite
from methods.openvla.config import OpenVLAConfig

ENV_VAR = "VLA_BENCH_OPENVLA_CHECKPOINT"


def torch_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        from harness.interfaces import ConfigError

        raise ConfigError(f"dtype must be auto | float32 | bfloat16 | float16, got {name!r}") from None


def pick_unnorm_key(folder: Path, configured: str, suite_id: str) -> str | None:
    """The configured key; else the only one; else the suite id without its version (libero_object-v1 ->
    libero_object) or OpenVLA's LIBERO dataset name (libero_object_no_noops) when the checkpoint has statistics
    under that name; else None (the loader then lists the keys)."""
    if configured:
        return configured
    stats = json.loads((folder / "config.json").read_text()).get("norm_stats") or {}
    if len(stats) == 1:
        return next(iter(stats))
    base = suite_id.rsplit("-v", 1)[0]
    for cand in (suite_id, base, f"{base}_no_noops"):  # OpenVLA's LIBERO fine-tunes: libero_object_no_noops
        if cand in stats:
            return cand
    return None


class OpenVLAPolicy(AdapterPolicy):
    pass


class OpenVLAMethod(AdapterMethod, Method):
    name = "openvla"
    config_cls = OpenVLAConfig
    label, env_var = "OpenVLA", ENV_VAR
    checkpoint_hint = (
        "a local checkpoint: `huggingface-cli download openvla/openvla-7b --local-dir D` "
        "(or a fine-tuned one, e.g. openvla/openvla-7b-finetuned-libero-object)"
    )

    def tiny_model(self, suite: Any, config: OpenVLAConfig) -> Any:
        from methods.openvla.model import build_tiny

        shapes = probe_suite(suite)
        return build_tiny(
            action_dim=shapes.action_dim,
            image_size=config.tiny_image_size,
            texts=list(shapes.instructions),
            seed=config.seed,
            camera=config.camera or shapes.cameras[0],
            layers=config.tiny_layers,
            width=config.tiny_width,
        )

    def load_model(self, path: str, data: DataSource, config: OpenVLAConfig) -> Any:
        from methods.openvla.model import load_openvla

        folder, suite = Path(path), data.suite
        return load_openvla(
            folder,
            unnorm_key=pick_unnorm_key(folder, config.unnorm_key, suite.suite_id)
            if (folder / "config.json").exists()
            else None,
            camera=config.camera or next(iter(getattr(suite, "cameras", ()) or ("image",))),
            center_crop=config.center_crop,
            device=data.device,
            dtype=torch_dtype(config.dtype, data.device),
        )

    def policy(self, model: Any, config: OpenVLAConfig) -> Policy:
        if config.center_crop:
            model.center_crop = True
        return OpenVLAPolicy(model, config, n_execute=config.n_execute, cameras=(model.camera,))
