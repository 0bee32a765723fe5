"""The mock method: succeeds on most mock-suite episodes; its variants fail in controlled ways."""
from __future__ import annotations

import os
import time
from typing import Any, ClassVar

import numpy as np
import torch

from harness.interfaces import ActionChunk, DataSource, Method, Policy, Task
from methods._mock.config import MockConfig
from methods._mock.model import TinyTransformer

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 40), "blue": (40, 60, 230)}


class MockPolicy(Policy):
    def __init__(self, cfg: MockConfig, image_size: int = 32):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.model = TinyTransformer(image_size, cfg.patch, cfg.dim, cfg.depth, cfg.heads, out_dim=1).eval()
        self.actions_per_call = float(cfg.n_execute)
        self.calls = 0

    def modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def reset(self, task: Task, seed: int) -> None:
        self.task, self.rng, self.calls = task, np.random.default_rng(seed), 0
        if self.cfg.fault == "exit" and seed == self.cfg.fault_seed:
            os._exit(1)  # a worker process dying mid-run (executor tests); never use with WORKERS=1 locally

    def _target(self, img: np.ndarray, colour: str) -> np.ndarray | None:
        mask = np.all(np.abs(img.astype(int) - COLOURS[colour]) < 30, axis=-1)
        if not mask.any():
            return None
        rc = np.argwhere(mask).mean(axis=0)
        return rc / (img.shape[0] - 1)

    def infer(self, obs: dict[str, Any], gain: float | None = None) -> ActionChunk:
        self.calls += 1
        if self.cfg.delay_s > 0:
            time.sleep(self.cfg.delay_s)
        if self.cfg.spin_s > 0:
            end = time.thread_time() + self.cfg.spin_s
            while time.thread_time() < end:
                pass
        img = obs["images"]["top"]
        if gain is None:  # given by infer_batch
            with torch.inference_mode():
                gain = torch.sigmoid(self.model(torch.from_numpy(img)[None])).item()  # in (0, 1): speed scale
        colour = next(iter(COLOURS)) if self.cfg.ignore_instruction else obs["instruction"].split()[2]
        target = self._target(img, colour)
        pos = np.asarray(obs["proprio"], dtype=float)
        d = np.zeros(2) if target is None else target - pos
        base = np.clip(d / 0.08, -1, 1) * (0.75 + 0.5 * gain)
        acts = np.stack([np.clip(base + self.rng.normal(0, self.cfg.noise, 2), -1, 1) for _ in range(self.cfg.chunk)])
        if self.cfg.fault == "nan" and self.calls >= 3:
            acts[0, 0] = np.nan
        elif self.cfg.fault == "wrong_shape":
            acts = np.zeros((self.cfg.chunk, 3))
        elif self.cfg.fault == "raise" and self.calls >= 2:
            raise RuntimeError("injected policy failure")
        return ActionChunk(acts.astype(np.float32), n_execute=self.cfg.n_execute,
                           extras={"tokens_kept": self.model.n_tokens})

    def episode_stats(self) -> dict[str, Any]:
        return {"infer_calls": self.calls}

    @classmethod
    def infer_batch(cls, policies: list["MockPolicy"], obs: list[dict[str, Any]]) -> list[ActionChunk]:
        """Policy-server batching: one forward pass over several sessions' images (the sessions share the
        model); noise and faults stay per session."""
        imgs = torch.from_numpy(np.stack([o["images"]["top"] for o in obs]))
        with torch.inference_mode():
            gains = torch.sigmoid(policies[0].model(imgs)).flatten().tolist()
        return [p.infer(o, gain=g) for p, o, g in zip(policies, obs, gains)]


class MockMethod(Method):
    name = "mock"
    config_cls = MockConfig
    suites = ("mock",)
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "teacher": {"dim": 64, "depth": 4, "heads": 4},
        "broken": {"ignore_instruction": True},
        "nan": {"fault": "nan"},
        "wrong_shape": {"fault": "wrong_shape"},
        "raise": {"fault": "raise"},
    }

    def distill(self, teacher: Policy | None, data: DataSource, config: MockConfig) -> Policy:
        return MockPolicy(config, int(data.suite.protocol.get("image_size", 32)))
