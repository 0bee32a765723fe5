"""Expert demonstrations for the driving suite: recording (``make demos SUITE=driving``) and torch loaders.

On-disk format (h5py is not installed here, so npz shards + a JSON manifest):

    <root>/manifest.json                      how it was made: suite, expert version, protocol digest, seed
                                              namespace, camera, action layout, counts, one row per episode
    <root>/<scenario>/<task_key>/ep_<seed>.npz  one episode, T policy steps:
        images      uint8  (T, H, W, 3)   obs["images"]["topdown"] before each action
        proprio     float32 (T, 6)        obs["proprio"] (layout in protocol.yaml)
        actions     float32 (T, 16)       the executed waypoints [x1, y1, ..., x8, y8] (ego frame, x fwd, y left)
        commentary  str    (T,)           the expert's decision in words ("slowing down: car crossing ahead")
        reason      str    (T,)           its decision code (yield, follow, lane_change, ...)
        instruction str    ()             the task's instruction

Seeds: ``derive_seed("driving-demos", <scenario suite id>, <task key>, i)``; any seed that equals an evaluation
seed of any profile is skipped (checked and recorded in the manifest). Demonstrations are never committed:
the default root is ``<repo>/data/demos/driving`` (git-ignored); set VLA_BENCH_DEMOS to move it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.interfaces import MissingArtifactError

ROOT = Path(__file__).resolve().parents[2]
FORMAT = "vla-bench-driving-demos-v1"


def default_root() -> Path:
    return Path(os.environ.get("VLA_BENCH_DEMOS", ROOT / "data" / "demos")) / "driving"


def eval_seeds(suite) -> set[int]:
    return {e.seed for p in ("full", "quick", "smoke") for e in suite.episodes(p)}


def record(suite_id: str = "driving", per_task: int = 10, root: Path | None = None, camera_size: int | None = None,
           keep_failures: bool = False, log=print) -> dict[str, Any]:
    from harness.interfaces import derive_seed
    from harness.plugins import make_suite
    from harness.runner import strip_privileged
    from suites.driving.expert import VERSION

    suite = make_suite(suite_id)
    root = Path(root or default_root())
    root.mkdir(parents=True, exist_ok=True)
    banned = eval_seeds(suite)
    expert = suite.expert()
    rows, skipped_overlap, discarded = [], 0, 0
    t0 = time.time()
    for task in suite.tasks():
        scen = suite._scen[task.meta["scenario"]]
        env = suite.make_env(task, privileged=True, **({"camera_size": camera_size} if camera_size else {}))
        i = got = 0
        while got < per_task and i < per_task * 5:
            seed = derive_seed("driving-demos", scen.suite_id, task.meta["key"], i)
            i += 1
            if seed in banned:
                skipped_overlap += 1
                continue
            obs, info = env.reset(seed=seed)
            expert.reset(task, seed)
            imgs, prop, acts, comm, reas = [], [], [], [], []
            done = False
            while not done and len(acts) < env.max_steps:
                chunk = expert.infer(obs)
                plain = strip_privileged(obs)
                imgs.append(plain["images"][env.cam_name])
                prop.append(plain["proprio"])
                acts.append(np.asarray(chunk.actions[0], np.float32))
                comm.append(chunk.extras.get("text", ""))
                reas.append(chunk.extras.get("reason", ""))
                obs, _, term, trunc, info = env.step(chunk.actions[0])
                done = term or trunc
            m = env.episode_metrics()
            if not m["success"] and not keep_failures:
                discarded += 1
                continue
            rel = Path(scen.name) / task.meta["key"] / f"ep_{seed}.npz"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(root / rel, images=np.stack(imgs), proprio=np.stack(prop), actions=np.stack(acts),
                                commentary=np.array(comm), reason=np.array(reas),
                                instruction=np.array(task.instruction))
            rows.append({"file": str(rel), "scenario": scen.name, "task": task.name, "instruction": task.instruction,
                         "seed": seed, "steps": len(acts), "success": bool(m["success"]), "outcome": m["outcome"]})
            got += 1
        env.close()
        log(f"[demos] {task.name}: {got} episodes ({i} seeds tried)")
    proto = suite.protocol_path().read_bytes()
    manifest = {
        "format": FORMAT, "suite": suite_id, "simulator": "highway-env", "expert_version": VERSION,
        "protocol_sha256_12": hashlib.sha256(proto).hexdigest()[:12],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wall_s": round(time.time() - t0, 1),
        "seed_namespace": "derive_seed('driving-demos', <scenario suite id>, <task key>, i)",
        "eval_seed_overlap": {"checked_against": "full, quick and smoke episodes of " + suite_id,
                              "skipped": skipped_overlap, "overlapping_in_dataset": 0},
        "camera": {"name": suite.protocol["camera"]["name"], "size": camera_size or suite.protocol["camera"]["size"]},
        "action": {"layout": "[x1, y1, ..., x8, y8] ego frame (x forward, y left), t = 0.25 ... 2.0 s",
                   "n_waypoints": suite.protocol["action"]["n_waypoints"],
                   "waypoint_dt": suite.protocol["action"]["waypoint_dt"]},
        "proprio_layout": suite.protocol["proprio"],
        "only_successful": not keep_failures, "discarded_failures": discarded,
        "counts": {"episodes": len(rows), "frames": int(sum(r["steps"] for r in rows)),
                   "per_task": {t.name: sum(1 for r in rows if r["task"] == t.name) for t in suite.tasks()}},
        "episodes": rows,
    }
    overlap = {r["seed"] for r in rows} & banned
    if overlap:
        raise AssertionError(f"demo seeds overlap evaluation seeds: {sorted(overlap)[:5]}")
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


class DrivingDemos:
    """The recorded demonstrations: ``.manifest``, ``.episodes`` (filtered by scenario), and the two views."""

    def __init__(self, root: Path | str | None = None, scenarios: list[str] | None = None):
        self.root = Path(root or default_root())
        mf = self.root / "manifest.json"
        if not mf.exists():
            raise MissingArtifactError(f"no driving demonstrations at {self.root}; run `make demos SUITE=driving`")
        self.manifest = json.loads(mf.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{mf}: format {self.manifest.get('format')!r}, expected {FORMAT!r}")
        self.episodes = [e for e in self.manifest["episodes"] if scenarios is None or e["scenario"] in scenarios]

    def __iter__(self):
        """Full episodes as dicts (the contract of ``Suite.demonstrations()``, as LIBERO's and SIMPLER's):
        images {camera: (T,H,W,3)}, proprio, actions, instruction, commentary (per step), task."""
        cam = (self.manifest.get("camera") or {}).get("name", "topdown")
        for row in self.episodes:
            with np.load(self.root / row["file"], allow_pickle=False) as z:
                yield {"images": {cam: z["images"]}, "proprio": z["proprio"], "actions": z["actions"],
                       "instruction": str(z["instruction"]), "commentary": [str(c) for c in z["commentary"]],
                       "task": row.get("task", "")}

    def frames(self, chunk: int = 4):
        return DemoFrames(self, chunk)

    def frame_pairs(self, k: int = 1):
        return DemoFramePairs(self, k)

    def __len__(self) -> int:
        return len(self.episodes)


def _torch_dataset_base():
    import torch.utils.data

    return torch.utils.data.Dataset


class _EpisodeIndex:
    def __init__(self, demos: DrivingDemos, fields: tuple[str, ...]):
        self.demos, self.fields = demos, fields
        self._cache: dict[int, dict[str, np.ndarray]] = {}

    def load(self, i: int) -> dict[str, np.ndarray]:
        if i not in self._cache:
            if len(self._cache) > 8:
                self._cache.pop(next(iter(self._cache)))
            with np.load(self.demos.root / self.demos.episodes[i]["file"], allow_pickle=False) as z:
                self._cache[i] = {f: z[f] for f in self.fields}  # reads only the listed arrays
        return self._cache[i]


class DemoFrames(_torch_dataset_base()):
    """Frame samples with action-chunk targets: image (3,H,W) float in [0,1], proprio, instruction, and the
    next ``chunk`` actions (padded by repeating the last) with a validity mask."""

    def __init__(self, demos: DrivingDemos, chunk: int = 4):
        self.idx = _EpisodeIndex(demos, ("images", "proprio", "actions", "commentary"))
        self.demos, self.chunk = demos, int(chunk)
        self.items = [(i, t) for i, e in enumerate(demos.episodes) for t in range(e["steps"])]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, n: int) -> dict[str, Any]:
        import torch

        i, t = self.items[n]
        ep = self.idx.load(i)
        T = len(ep["actions"])
        sel = np.minimum(np.arange(t, t + self.chunk), T - 1)
        return {"image": torch.from_numpy(ep["images"][t]).permute(2, 0, 1).float() / 255.0,
                "proprio": torch.from_numpy(ep["proprio"][t]),
                "instruction": self.demos.episodes[i]["instruction"],
                "actions": torch.from_numpy(ep["actions"][sel]),
                "mask": torch.from_numpy(np.arange(t, t + self.chunk) < T),
                "commentary": str(ep["commentary"][t])}


class DemoFramePairs(_torch_dataset_base()):
    """Unlabelled frame pairs (t, t+k) for a latent action model: reads ONLY the images array."""

    def __init__(self, demos: DrivingDemos, k: int = 1):
        self.idx = _EpisodeIndex(demos, ("images",))
        self.k = int(k)
        self.items = [(i, t) for i, e in enumerate(demos.episodes) for t in range(max(e["steps"] - self.k, 0))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, n: int) -> dict[str, Any]:
        import torch

        i, t = self.items[n]
        im = self.idx.load(i)["images"]
        f = lambda a: torch.from_numpy(a).permute(2, 0, 1).float() / 255.0  # noqa: E731
        return {"frame_t": f(im[t]), "frame_tk": f(im[t + self.k])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="record driving expert demonstrations (highway-env)")
    ap.add_argument("--suite", default="driving")
    ap.add_argument("--per-task", type=int, default=10)
    ap.add_argument("--out", default=None)
    ap.add_argument("--camera-size", type=int, default=None)
    ap.add_argument("--keep-failures", action="store_true")
    a = ap.parse_args(argv)
    m = record(a.suite, a.per_task, Path(a.out) if a.out else None, a.camera_size, a.keep_failures)
    print(json.dumps({"root": str(Path(a.out) if a.out else default_root()), **m["counts"],
                      "discarded_failures": m["discarded_failures"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
