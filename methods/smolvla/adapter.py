"""Method `smolvla`: a LeRobot SmolVLA checkpoint as a policy (and as a teacher: ``TEACHER=smolvla``).

The network is rebuilt from transformers classes with LeRobot's parameter names (LeRobot itself does not import
beside this project's torch; see README.md). The policy exposes the model anatomy, so the token-pruning methods
wrap it unchanged.
"""

from __future__ import annotations

from typing import Any

from harness.interfaces import ConfigError, DataSource, Method, Policy
from methods.openvla.adapter import torch_dtype
from methods.openvla.common import AdapterMethod, AdapterPolicy, probe_suite
from methods.smolvla.config import SmolVLAConfig

ENV_VAR = "VLA_BENCH_SMOLVLA_CHECKPOINT"


class SmolVLAPolicy(AdapterPolicy):
    pass


class SmolVLAMethod(AdapterMethod, Method):
    name = "smolvla"
    config_cls = SmolVLAConfig
    label, env_var = "SmolVLA", ENV_VAR
    checkpoint_hint = (
        "a local LeRobot policy folder: `huggingface-cli download lerobot/smolvla_base --local-dir D` "
        "(a base model; fine-tune it for the suite) plus the VLM's config/tokenizer"
    )

    def tiny_model(self, suite: Any, config: SmolVLAConfig) -> Any:
        from methods.smolvla.model import build_tiny

        shapes = probe_suite(suite)
        return build_tiny(
            cameras=list(config.cameras) or list(shapes.cameras),
            image_hw=shapes.image_hw,
            state_dim=shapes.proprio_dim,
            action_dim=shapes.action_dim,
            texts=list(shapes.instructions),
            seed=config.seed,
            vlm_layers=config.tiny_layers,
            chunk=config.tiny_chunk,
            n_action_steps=max(1, config.tiny_chunk // 2),
        )

    def load_model(self, path: str, data: DataSource, config: SmolVLAConfig) -> Any:
        from methods.smolvla.model import load_smolvla

        cams = list(config.cameras) or list(getattr(data.suite, "cameras", ()))
        return load_smolvla(
            path,
            vlm_path=config.vlm_path,
            cameras=cams or None,
            device=data.device,
            dtype=torch_dtype(config.dtype, data.device),
        )

    def policy(self, model: Any, config: SmolVLAConfig) -> Policy:
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
