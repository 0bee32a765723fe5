"""The mock suite: reach the coloured target named by the instruction, from a 32x32 top-down image.

Three targets are always on the table, so a policy that ignores the instruction fails about two episodes
in three; touching the wrong target ends the episode as a failure.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from harness.interfaces import EpisodeResult, Policy, Profile, Suite, Task, ActionChunk

COLOURS = {"red": (230, 40, 40), "green": (40, 200, 40), "blue": (40, 60, 230)}


class MockEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: Task, protocol: dict, privileged: bool = False):
        self.task, self.p, self.privileged = task, protocol, privileged
        self.size = int(protocol["image_size"])
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict({
            "images": gym.spaces.Dict({"top": gym.spaces.Box(0, 255, (self.size, self.size, 3), np.uint8)}),
            "proprio": gym.spaces.Box(0.0, 1.0, (2,), np.float32),
        })
        self.targets: dict[str, np.ndarray] = {}
        self.pos = np.zeros(2)
        self.steps = 0
        self.outcome = "running"

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        rng = self.np_random
        while True:  # targets far enough apart and from the start
            pts = rng.uniform(0.1, 0.9, size=(4, 2))
            d = np.linalg.norm(pts[:, None] - pts[None], axis=-1) + np.eye(4)
            if d.min() > 0.3:
                break
        self.pos = pts[0]
        self.targets = dict(zip(COLOURS, pts[1:]))
        self.steps, self.outcome = 0, "running"
        return self._obs(), {"success": False}

    def _render(self) -> np.ndarray:
        img = np.full((self.size, self.size, 3), 245, np.uint8)
        for name, xy in self.targets.items():
            r, c = (xy * (self.size - 1)).round().astype(int)
            img[max(r - 1, 0): r + 2, max(c - 1, 0): c + 2] = COLOURS[name]
        r, c = (self.pos * (self.size - 1)).round().astype(int)
        img[r, c] = 0
        return img

    def _obs(self) -> dict[str, Any]:
        obs = {"images": {"top": self._render()}, "proprio": self.pos.astype(np.float32),
               "instruction": self.task.instruction}
        if self.privileged:
            obs["privileged"] = {"targets": {k: v.copy() for k, v in self.targets.items()}, "pos": self.pos.copy()}
        return obs

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        a = np.clip(np.asarray(action, dtype=float), -1, 1)
        self.pos = np.clip(self.pos + float(self.p["step_size"]) * a, 0.0, 1.0)
        self.steps += 1
        dists = {k: float(np.linalg.norm(self.pos - v)) for k, v in self.targets.items()}
        goal = self.task.name
        success = dists[goal] < self.p["success_radius"]
        wrong = any(d < self.p["success_radius"] for k, d in dists.items() if k != goal)
        if success:
            self.outcome = "success"
        elif wrong:
            self.outcome = "wrong_target"
        terminated = success or wrong
        return self._obs(), float(success), terminated, False, {"success": bool(success), "distance": dists[goal]}

    def episode_metrics(self) -> dict[str, Any]:
        return {"final_distance": float(np.linalg.norm(self.pos - self.targets[self.task.name])),
                "wrong_target": self.outcome == "wrong_target", "outcome": self.outcome}


class MockExpert(Policy):
    """Privileged: steers straight at the instructed target."""

    actions_per_call = 1.0

    def reset(self, task: Task, seed: int) -> None:
        self.task = task

    def infer(self, obs: dict) -> ActionChunk:
        priv = obs["privileged"]
        d = priv["targets"][self.task.name] - priv["pos"]
        return ActionChunk(np.clip(d / 0.08, -1, 1)[None].astype(np.float32))


class MockSuite(Suite):
    suite_id = "mock-v1"
    description = "tiny 2-D reaching task (tests only)"
    teacher = "reference"  # the reference VLA trained on mock demos (methods/reference/checkpoints/mock-v1)
    cameras = ("top",)

    def tasks(self) -> list[Task]:
        return [Task(c, f"reach the {c} target", i) for i, c in enumerate(self.protocol["tasks"])]

    def profiles(self) -> dict[str, Profile]:
        return {name: Profile(name, **cfg) for name, cfg in self.protocol["profiles"].items()}

    def max_steps(self, task: Task) -> int:
        return int(self.protocol["max_steps"])

    def make_env(self, task: Task, *, privileged: bool = False, **options: Any) -> MockEnv:
        return MockEnv(task, self.protocol, privileged)

    def aggregate(self, episodes: list[EpisodeResult]) -> dict[str, Any]:
        m = [e.metrics for e in episodes if e.metrics]
        if not m:
            return {}
        return {"wrong_target_rate": float(np.mean([x["wrong_target"] for x in m])),
                "mean_final_distance": float(np.mean([x["final_distance"] for x in m]))}

    def expert(self) -> Policy:
        return MockExpert()

    def provenance(self) -> dict[str, Any]:
        return {"simulator": "vla-bench mock (numpy)", "image_size": self.protocol["image_size"]}
