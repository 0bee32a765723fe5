"""Method `smolvla`: a LeRobot SmolVLA checkpoint as a policy (and as a teacher: ``TEACHER=smolvla``).

The network is rebuilt from transformers classes with LeRobot's parameter names (LeRobot itself does not import
beside this project's torch; see README.md). The policy exposes the model anatomy, so the token-pruning methods
wrap it unchanged.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar

from harness.interfaces import ConfigError, DataSource, Method, Policy
from methods.openvla.adapter import torch_dtype
from methods.openvla.common import (
    AdapterPolicy,
    MissingCheckpointError,
    probe_suite,
    require_transformers,
    resolve_checkpoint,
)
from methods.smolvla.config import SmolVLAConfig

ENV_VAR = "VLA_BENCH_SMOLVLA_CHECKPOINT"


class SmolVLAPolicy(AdapterPolicy):
    pass


class SmolVLAMethod(Method):
    name = "smolvla"
    config_cls = SmolVLAConfig
    variants: ClassVar[dict[str, dict[str, Any]]] = {"tiny": {"tiny": True}}

    def distill(self, teacher: Policy | None, data: DataSource, config: SmolVLAConfig) -> Policy:
        require_transformers("smolvla")
        from methods.smolvla.model import build_tiny, load_smolvla

        suite = data.suite
        if config.tiny:
            shapes = probe_suite(suite)
            cameras = list(config.cameras) or list(shapes.cameras)
            model = build_tiny(
                cameras=cameras,
                image_hw=shapes.image_hw,
                state_dim=shapes.proprio_dim,
                action_dim=shapes.action_dim,
                texts=list(shapes.instructions),
                seed=config.seed,
                vlm_layers=config.tiny_layers,
                chunk=config.tiny_chunk,
                n_action_steps=max(1, config.tiny_chunk // 2),
            )
            print(
                f"[smolvla] tiny random-weight SmolVLA ({sum(p.numel() for p in model.parameters())} params) for "
                f"{suite.suite_id}: exercises the pipeline, its success rate means nothing",
                file=sys.stderr,
            )
        else:
            path = resolve_checkpoint(config.checkpoint, ENV_VAR)
            if not path:
                raise MissingCheckpointError(
                    f"smolvla needs a local LeRobot policy folder: `huggingface-cli download lerobot/smolvla_base "
                    f"--local-dir D` (a base model; fine-tune it for the suite) plus the VLM's config/tokenizer, then "
                    f"`--set checkpoint=D` or `export {ENV_VAR}=D`; `smolvla@tiny` runs a random tiny model instead"
                )
            cams = list(config.cameras) or list(getattr(suite, "cameras", ()))
            model = load_smolvla(
                path,
                vlm_path=config.vlm_path,
                cameras=cams or None,
                device=data.device,
                dtype=torch_dtype(config.dtype, data.device),
            )
        if config.gripper not in ("none", "binarize"):
            raise ConfigError(f"smolvla.gripper must be none | binarize, got {config.gripper!r}")
        n_exec = config.n_execute or int(model.cfg["n_action_steps"])
        return SmolVLAPolicy(
            model,
            config,
            n_execute=min(n_exec, model.chunk),
            flow_steps=config.flow_steps,
            cameras=tuple(model.cameras),
        )
