"""Expert demonstrations for the SIMPLER suites: recording (``make demos SUITE=simpler_tabletop-v1``), the file
format, and a torch Dataset.

Format: robomimic-style HDF5 at ``.cache/demos/<suite_id>/demos.hdf5`` (never committed)::

    data/                       attrs: suite, env_args (JSON), total (frames), protocol_digest
      demo_0/                   attrs: task, instruction, seed, success, num_samples, dart_noise
        obs/base                uint8  (T, H, W, 3)   the policy's camera (what obs["images"]["base"] was)
        obs/proprio             float32 (T, 8)        TCP pose xyz + wxyz | gripper opening
        actions                 float32 (T, 7)        the expert's clean action (label)
        executed_actions        float32 (T, 7)        what was executed (label + DART noise, clipped)
      ...
    mask/train, mask/valid      demo names (90/10 split by demo index)

Seeds: ``suite.demo_seed(task, i)`` — checked disjoint from every evaluation seed of every profile.
Only successful episodes are kept (the expert is retried on further seeds, at most 3x the target count).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.interfaces import MissingArtifactError

ROOT = Path(__file__).resolve().parents[2]


def demo_path(suite_id: str, root: Path | None = None) -> Path:
    return (root or ROOT / ".cache" / "demos") / suite_id / "demos.hdf5"


def record(suite_id: str = "simpler_tabletop-v1", per_task: int | None = None, tasks: list[str] | None = None,
           out: Path | None = None, dart_noise: float = 0.05, max_tries: int = 3, log=print) -> Path:
    import h5py

    from harness.interfaces import EpisodeSpec
    from harness.plugins import make_suite
    from harness.specs import file_digest

    suite = make_suite(suite_id)
    per_task = per_task or int(suite.protocol[suite.tier].get("demos", {}).get("trials_per_task", 50))
    eval_seeds = {e.seed for p in suite.profiles() for e in suite.episodes(p)}
    chosen = [suite.task(t) for t in tasks] if tasks else suite.tasks()
    out = Path(out) if out else demo_path(suite_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.hdf5")
    expert = suite.expert()
    n_demo = total = 0
    t0 = time.time()
    with h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        data.attrs["suite"] = suite_id
        data.attrs["protocol_digest"] = file_digest(suite.protocol_path())
        data.attrs["env_args"] = json.dumps({k: suite.protocol[suite.tier][k] for k in
                                             ("control_hz", "control_mode", "obs_mode", "camera", "image_size")})
        for task in chosen:
            env = suite.make_env(task, privileged=True)
            got = tried = 0
            try:
                while got < per_task and tried < per_task * max_tries:
                    seed = suite.demo_seed(task, tried)
                    tried += 1
                    if seed in eval_seeds:
                        continue  # never record on an evaluation seed
                    spec = EpisodeSpec(f"{task.name}/demo{tried:04d}", task, 100000 + tried, seed,
                                       suite.max_steps(task))
                    ep = _rollout(env, expert, spec, dart_noise)
                    if not ep["success"]:
                        continue
                    g = data.create_group(f"demo_{n_demo}")
                    g.attrs.update(task=task.name, instruction=task.instruction, seed=seed, success=True,
                                   num_samples=len(ep["actions"]), dart_noise=dart_noise)
                    g.create_dataset("obs/base", data=ep["images"], compression="gzip", compression_opts=4)
                    g.create_dataset("obs/proprio", data=ep["proprio"])
                    g.create_dataset("actions", data=ep["actions"])
                    g.create_dataset("executed_actions", data=ep["executed"])
                    n_demo += 1
                    got += 1
                    total += len(ep["actions"])
            finally:
                env.close()
            log(f"[demos] {task.name}: {got}/{per_task} successful demos from {tried} seeds "
                f"({time.time() - t0:.0f} s so far)")
        data.attrs["total"] = total
        names = [f"demo_{i}" for i in range(n_demo)]
        valid = names[::10]
        f.create_dataset("mask/valid", data=np.array(valid, dtype="S"))
        f.create_dataset("mask/train", data=np.array([n for n in names if n not in valid], dtype="S"))
    tmp.replace(out)
    log(f"[demos] wrote {n_demo} demos, {total} frames -> {out}")
    return out


def _rollout(env: Any, expert: Any, spec: Any, dart_noise: float) -> dict[str, Any]:
    rng = np.random.default_rng(spec.seed)
    obs, _ = env.reset(seed=spec.seed, options={"episode": spec})
    expert.reset(spec.task, spec.seed)
    imgs, prop, acts, execd = [], [], [], []
    success, steps = False, 0
    lo, hi = env.action_space.low, env.action_space.high
    while steps < spec.max_steps and not success:
        a = np.asarray(expert.infer(obs).actions[0], np.float32)
        noisy = np.clip(a + rng.normal(0, dart_noise, size=a.shape) * (np.arange(a.size) < 6), lo, hi) \
            if dart_noise > 0 else a
        imgs.append(obs["images"]["base"])
        prop.append(np.asarray(obs["proprio"], np.float32))
        acts.append(a)
        execd.append(noisy.astype(np.float32))
        obs, _, term, trunc, info = env.step(noisy.astype(np.float32))
        steps += 1
        success = bool(info.get("success", False))
        if term or trunc:
            break
    return {"images": np.stack(imgs), "proprio": np.stack(prop), "actions": np.stack(acts),
            "executed": np.stack(execd), "success": success}


class DemoSet:
    """The recorded demos: ``episodes()`` gives dicts {images: {"base": (T,H,W,3)}, proprio, actions,
    instruction, task} (what ``methods/reference`` reads); ``dataset()`` a per-frame torch Dataset."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.exists():
            raise MissingArtifactError(f"no demonstrations at {self.path}; run `make demos SUITE=<suite id>`")

    def names(self, split: str | None = None) -> list[str]:
        import h5py

        with h5py.File(self.path, "r") as f:
            if split is None:
                return sorted(f["data"].keys(), key=lambda n: int(n.split("_")[1]))
            return [n.decode() for n in f[f"mask/{split}"][()]]

    def episodes(self, split: str | None = None) -> list[dict[str, Any]]:
        import h5py

        out = []
        with h5py.File(self.path, "r") as f:
            for n in self.names(split):
                g = f["data"][n]
                out.append({"images": {"base": g["obs/base"][()]}, "proprio": g["obs/proprio"][()],
                            "actions": g["actions"][()], "instruction": str(g.attrs["instruction"]),
                            "task": str(g.attrs["task"])})
        return out

    def __len__(self) -> int:
        return len(self.names())

    def __iter__(self):
        return iter(self.episodes())

    def dataset(self, split: str | None = "train") -> SimplerDemoDataset:
        return SimplerDemoDataset(self.path, split)


def _torch_dataset_base() -> type:
    try:
        from torch.utils.data import Dataset

        return Dataset
    except ImportError:  # pragma: no cover — torch is a core dependency
        return object


class SimplerDemoDataset(_torch_dataset_base()):  # type: ignore[misc]
    """One item per frame: {"image": uint8 (H,W,3) tensor, "proprio": (8,), "action": (7,), "instruction": str}."""

    def __init__(self, path: Path, split: str | None = "train"):
        eps = DemoSet(path).episodes(split)
        self.images = np.concatenate([e["images"]["base"] for e in eps]) if eps else np.zeros((0, 1, 1, 3), np.uint8)
        self.proprio = np.concatenate([e["proprio"] for e in eps]) if eps else np.zeros((0, 8), np.float32)
        self.actions = np.concatenate([e["actions"] for e in eps]) if eps else np.zeros((0, 7), np.float32)
        self.instructions = [e["instruction"] for e in eps for _ in range(len(e["actions"]))]

    def __len__(self) -> int:
        return len(self.actions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        return {"image": torch.from_numpy(self.images[i]), "proprio": torch.from_numpy(self.proprio[i]),
                "action": torch.from_numpy(self.actions[i]), "instruction": self.instructions[i]}


def load_demos(suite_id: str, root: Path | None = None) -> DemoSet:
    return DemoSet(demo_path(suite_id, root))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="record SIMPLER expert demonstrations (HDF5)")
    p.add_argument("--suite", default="simpler_tabletop-v1")
    p.add_argument("--per-task", type=int, default=None, help="successful demos per task (protocol: demos)")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: all)")
    p.add_argument("--out", default=None)
    p.add_argument("--dart-noise", type=float, default=0.05, help="N(0, s) on executed xyz/rotation (labels clean)")
    a = p.parse_args(argv)
    record(a.suite, a.per_task, a.tasks.split(",") if a.tasks else None, Path(a.out) if a.out else None,
           a.dart_noise)
    return 0


if __name__ == "__main__":
    sys.exit(main())
