"""Observations recorded from a suite for profiling, saved without pickle (npz arrays + JSON scalars).

Profiling replays these outside the rollout loop, so timing never slows an episode, and the method and its
teacher are timed on exactly the same inputs. Sequences are kept in order with their episode boundaries,
so stateful policies (key/value caches across control steps) are profiled as they run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Recording:
    task_names: list[str]  # per observation
    seeds: list[int]  # per observation
    starts: list[bool]  # True where an episode starts (reset the policy before this obs)
    obs: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.obs)


def _flatten(obj: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, dict):
        return {k: _flatten(v, f"{prefix}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unflatten(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return np.array(arrays[obj["__array__"]])
        return {k: _unflatten(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, arrays) for v in obj]
    return obj


def save(rec: Recording, path: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    tree = [_flatten(o, f"o{i}", arrays) for i, o in enumerate(rec.obs)]
    meta = {"task_names": rec.task_names, "seeds": rec.seeds, "starts": rec.starts, "obs": tree}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    tmp.replace(path)


def load(path: Path) -> Recording:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["__meta__"]).decode())
        obs = [_unflatten(t, data) for t in meta["obs"]]
    return Recording(meta["task_names"], meta["seeds"], meta["starts"], obs)


def collect(suite: Any, policy: Any, *, privileged: bool, n_obs: int = 16, per_episode: int = 8,
            profile: str = "smoke") -> Recording:
    """Drive the first episodes of ``profile`` with ``policy`` and record up to ``per_episode`` consecutive
    observations per episode, until ``n_obs`` are recorded."""
    from harness.runner import run_episode

    rec = Recording([], [], [], [])
    episodes = suite.episodes(profile)
    # spread over tasks: take the first trial of each task first
    episodes = sorted(episodes, key=lambda e: (e.trial, e.task.index))
    envs: dict[str, Any] = {}
    try:
        for ep in episodes:
            if len(rec) >= n_obs:
                break
            env = envs.get(ep.task.name) or envs.setdefault(ep.task.name, suite.make_env(ep.task, privileged=privileged))
            taken = 0

            def on_obs(obs: dict, ep=ep) -> None:
                nonlocal taken
                if taken < per_episode and len(rec) < n_obs:
                    rec.obs.append({k: v for k, v in obs.items() if k != "privileged"})
                    rec.task_names.append(ep.task.name)
                    rec.seeds.append(ep.seed)
                    rec.starts.append(taken == 0)
                    taken += 1

            run_episode(env, policy, ep, privileged=privileged, timeout_s=600.0, on_obs=on_obs)
    finally:
        for env in envs.values():
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass
    if not rec.obs:
        raise RuntimeError(f"no observations could be recorded from {suite.suite_id}")
    return rec
