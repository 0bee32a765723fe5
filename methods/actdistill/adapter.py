"""Method `actdistill`: a same-depth student of the suite's reference teacher with a per-input router that skips
whole layers (backbone block + action-expert block) at inference. Training: methods/actdistill/train.py."""
from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import torch

from harness.interfaces import ActionChunk, ConfigError, DataSource, Method, Policy, Task
from methods.actdistill.config import ActDistillConfig
from methods.actdistill.student import Router, hard_gates


class ActDistillPolicy(Policy):
    """Deployed student: router on the prefix embeddings -> closed layers are passed as ``skip`` to the anatomy
    (not computed, in the backbone and in every flow step of the expert)."""

    def __init__(self, model: Any, router: Router, helper: Any, cfg: ActDistillConfig, manifest: dict[str, Any]):
        self.model, self.router, self.helper, self.cfg, self.manifest = model.eval(), router.eval(), helper, cfg, manifest
        self.n_execute = helper.n_execute
        self.actions_per_call = helper.actions_per_call
        self.flow_steps = helper.flow_steps
        self.n_layers = model.n_layers
        self._usage = np.zeros(self.n_layers)
        self.calls = 0

    def modules(self) -> list[torch.nn.Module]:
        return [self.model, self.router]

    def reset(self, task: Task, seed: int) -> None:
        self.helper.reset(task, seed)
        self._usage = np.zeros(self.n_layers)
        self.calls = 0

    def gates(self, state: Any) -> torch.Tensor:
        return hard_gates(self.router(state), self.cfg.threshold)[0]

    def infer(self, obs: dict[str, Any]) -> ActionChunk:
        m = self.model
        with torch.inference_mode():
            state = m.embed_prefix(*self.helper.inputs(obs))
            open_ = self.gates(state)
            skip = {i for i in range(self.n_layers) if not bool(open_[i])}
            state = m.forward_prefix(state, skip=skip)
            actions = m.sample_actions(state, self.helper.noise(), skip=skip, steps=self.flow_steps)
            extras: dict[str, Any] = {"blocks_executed": [i for i in range(self.n_layers) if i not in skip],
                                      "tokens_kept": int(state.n_tokens)}
            if self.helper.generate:
                ids = m.generate_text(state, self.helper.cfg.text_max_len or None)[0]
                extras["text"] = self.helper.lang_tok.decode(ids)
        self.calls += 1
        self._usage += open_.numpy().astype(float)
        return ActionChunk(self.helper.postprocess(actions), n_execute=self.n_execute, extras=extras)

    def episode_stats(self) -> dict[str, Any]:
        if not self.calls:
            return {"infer_calls": 0}
        usage = self._usage / self.calls
        return {"infer_calls": self.calls, "blocks_executed_mean": float(usage.sum()),
                "block_fraction": float(usage.mean()), "block_usage": [round(float(u), 4) for u in usage]}


_FREE_ROUTER = {"router_init": "importance", "router_init_logit": 2.0, "lr_router": 3e-5, "lr": 1e-4}


class ActDistillMethod(Method):
    name = "actdistill"
    config_cls = ActDistillConfig
    needs_teacher = True
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "nograph": {"use_graph": False},
        "static": {"static": True},
        # the default since session 8: the router held near Shallow-pi's layer set (README "@pinned"); kept as a
        # name because its committed result folder is actdistill@pinned
        "pinned": {"router_init": "uniform", "router_init_logit": 4.0, "lr_router": 1e-6, "lr": 3e-4},
        # a freely learning router (sessions 6-7 default): importance-ranked initial layers, paper learning rate
        "free": dict(_FREE_ROUTER),
        # a freely learning router started from Shallow-pi's evenly spread layer set (session 7)
        "uniform": {**_FREE_ROUTER, "router_init": "uniform"},
    }
    conformance_suite = "mock-v1"

    def variant_overrides(self, variant: str | None) -> dict[str, Any]:
        if variant is not None and (m := re.fullmatch(r"budget(0?\.\d+|1(\.0+)?)", variant)):
            return {"budget": float(m.group(1))}
        return super().variant_overrides(variant)

    def distill(self, teacher: Policy | None, data: DataSource, config: ActDistillConfig) -> Policy:
        from methods.actdistill.train import load_artifact, train_student
        from methods.reference.adapter import ReferencePolicy

        if not 0.0 < config.budget <= 1.0:
            raise ConfigError(f"ActDistillConfig.budget must be in (0, 1], got {config.budget}")
        from methods.actdistill.train import ROUTER_INITS

        if config.router_init not in ROUTER_INITS:
            raise ConfigError(f"ActDistillConfig.router_init must be one of {' | '.join(ROUTER_INITS)}, got "
                              f"{config.router_init!r}")
        if config.balance_on not in ("hard", "soft"):
            raise ConfigError(f"ActDistillConfig.balance_on must be 'hard' or 'soft', got {config.balance_on!r}")
        if config.graph_reduce not in ("mean", "sum"):
            raise ConfigError(f"ActDistillConfig.graph_reduce must be 'mean' or 'sum', got {config.graph_reduce!r}")
        if not isinstance(teacher, ReferencePolicy):
            teacher = self._reference_teacher(teacher, data)
        folder = train_student(teacher, data, config)
        model, router, manifest = load_artifact(folder)
        from dataclasses import replace

        tcfg = replace(teacher.cfg, n_execute=config.n_execute or teacher.cfg.n_execute,
                       flow_steps=config.flow_steps or teacher.cfg.flow_steps)
        helper = ReferencePolicy(model, teacher.tok, teacher.lang_tok, manifest, tcfg)
        return ActDistillPolicy(model, router, helper, config, manifest)

    @staticmethod
    def _reference_teacher(teacher: Policy | None, data: DataSource) -> Any:
        """ActDistill needs the anatomy of the reference VLA. When the suite's teacher is something else (e.g. the
        mock suite's stand-in before it is switched to `reference`), load the suite's reference checkpoint."""
        import sys

        from harness.plugins import make_method

        ref = make_method("reference")
        name = type(teacher).__name__ if teacher is not None else None
        print(f"[actdistill] suite teacher {name} has no reference anatomy; using the reference checkpoint of "
              f"{data.suite.suite_id}", file=sys.stderr)
        return ref.distill(None, data, ref.config(data.suite.suite_id))
