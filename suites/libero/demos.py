"""Expert demonstrations for LIBERO: recording (``make demos SUITE=libero_object``) and a torch Dataset.

Layout: one HDF5 file per task, LIBERO/robomimic style, under ``data/libero/<sub-suite>/<task>_demo.hdf5``
(git-ignored; never committed)::

    data/                       attrs: env_args (json), problem_info (json), bddl_file_name, language_instruction,
                                       expert_version, noise (json), placement_seeds, created_at, git_commit,
                                       protocol_digest, image_orientation="upright", total, num_demos, attempts
      demo_<i>/                 attrs: num_samples, placement_seed, noise_seed, init_state_index (-1: sampled),
                                repaired_objects (json: objects put back on their fixture region, LiberoEnv docs)
        obs/agentview_rgb       uint8 (T, H, W, 3)  upright (img[::-1, ::-1] of robosuite's frame)
        obs/eye_in_hand_rgb     uint8 (T, H, W, 3)  upright
        obs/ee_pos (T,3)  obs/ee_ori (T,3, axis-angle)  obs/gripper_states (T,2)  obs/proprio (T,8)
        actions                 float32 (T, 7)  the expert's clean action (the label)
        executed_actions        float32 (T, 7)  what was sent to the env (label + DART noise on xyz)
        states                  float64 (T, S)  flattened MuJoCo state before each step
        rewards, dones          (T,)

Observation t is the one the expert acted on at step t. Initial scenes come from LIBERO's own placement
sampler seeded with ``placement_seed_base + task_index * 100_000 + attempt`` — never from the fixed evaluation
init states (which the evaluation seeds with 7 and then overwrites with init state i). Failed episodes are
dropped (counted in ``attempts``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harness.interfaces import MissingArtifactError

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = ROOT / "data" / "libero"


def demo_path(sub_suite: str, task_name: str, root: Path | None = None) -> Path:
    return Path(root or DEFAULT_ROOT) / sub_suite / f"{task_name.split('/')[-1]}_demo.hdf5"


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def record_task(suite: Any, task: Any, n_demos: int, *, root: Path | None = None, noise: float = 0.1,
                image_size: int = 128, max_attempts: int | None = None, log=print) -> Path:
    """Record ``n_demos`` successful expert episodes of ``task`` (appends to an existing file: resumable)."""
    import h5py

    from harness.specs import file_digest
    from suites.libero.expert import EXPERT_VERSION, LiberoExpert

    p = suite.protocol
    sub = task.meta["suite"]
    path = demo_path(sub, task.name, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = int(p["demos"]["placement_seed_base"]) + int(task.meta["task_id"]) * 100_000
    max_attempts = max_attempts or n_demos * 3 + 5
    max_steps = suite.max_steps(task)
    env = suite.make_env(task, privileged=True, render=True, image_size=image_size)
    expert = LiberoExpert()
    try:
        with h5py.File(path, "a") as f:
            data = f.require_group("data")
            done = len([k for k in data.keys() if k.startswith("demo_")])
            attempts = int(data.attrs.get("attempts", 0))
            seeds = list(data.attrs.get("placement_seeds", []))
            if done == 0:
                data.attrs["env_args"] = json.dumps({"env_name": "LIBERO ControlEnv", "type": 1, "env_kwargs": {
                    k: v for k, v in env.env_kwargs.items()}, "controller": p["controller"]})
                data.attrs["problem_info"] = json.dumps({"problem_name": env._env.problem_name,
                                                         "domain_name": env._env.domain_name,
                                                         "language_instruction": task.instruction})
                data.attrs["bddl_file_name"] = env.bddl_file
                data.attrs["language_instruction"] = task.instruction
                data.attrs["task"] = task.name
                data.attrs["suite"] = sub
                data.attrs["expert_version"] = EXPERT_VERSION
                data.attrs["noise"] = json.dumps({"kind": "DART: N(0, s) added to executed xyz; labels clean",
                                                  "xyz_std": noise, "rng": "numpy default_rng(placement_seed)"})
                data.attrs["image_orientation"] = "upright (img[::-1, ::-1] of robosuite's OpenGL frame)"
                data.attrs["image_size"] = image_size
                data.attrs["cameras"] = json.dumps({"agentview_rgb": "agentview", "eye_in_hand_rgb": "robot0_eye_in_hand"})
                data.attrs["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
                data.attrs["git_commit"] = _git_commit() or ""
                data.attrs["protocol_digest"] = file_digest(suite.protocol_path())
                data.attrs["placement_seed_base"] = base
            elif data.attrs.get("expert_version") != EXPERT_VERSION or float(json.loads(data.attrs["noise"])["xyz_std"]) != noise:
                raise ValueError(f"{path} was recorded with expert {data.attrs.get('expert_version')} / "
                                 f"noise {data.attrs.get('noise')}; delete it or record elsewhere (--out)")
            while done < n_demos and attempts < max_attempts:
                seed = base + attempts
                attempts += 1
                t0 = time.perf_counter()
                ep = _rollout(env, expert, task, seed, noise, max_steps)
                if ep is None:
                    log(f"  {task.name[:60]} seed {seed}: failed (dropped)")
                else:
                    g = data.create_group(f"demo_{done}")
                    obs = g.create_group("obs")
                    for k, v in ep["obs"].items():
                        obs.create_dataset(k, data=v, compression="gzip", compression_opts=4,
                                           chunks=(1, *v.shape[1:]) if v.ndim == 4 else None)
                    for k in ("actions", "executed_actions", "states", "rewards", "dones"):
                        g.create_dataset(k, data=ep[k], compression="gzip" if k == "states" else None)
                    g.attrs["num_samples"] = len(ep["actions"])
                    g.attrs["placement_seed"] = seed
                    g.attrs["noise_seed"] = seed
                    g.attrs["init_state_index"] = -1
                    g.attrs["repaired_objects"] = json.dumps(env.repaired)
                    seeds.append(seed)
                    done += 1
                    log(f"  {task.name[:60]} seed {seed}: demo_{done - 1} ({len(ep['actions'])} steps, "
                        f"{time.perf_counter() - t0:.1f} s)")
                data.attrs["attempts"] = attempts
                data.attrs["placement_seeds"] = np.asarray(seeds, dtype=np.int64)
                data.attrs["num_demos"] = done
                data.attrs["total"] = int(sum(data[k].attrs["num_samples"] for k in data.keys() if k.startswith("demo_")))
                f.flush()
            if done < n_demos:
                log(f"  WARNING {task.name}: only {done}/{n_demos} successful demos after {attempts} attempts")
    finally:
        env.close()
    return path


def _rollout(env: Any, expert: Any, task: Any, seed: int, noise: float, max_steps: int) -> dict | None:
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed, options={"placement_seed": seed})
    expert.reset(task, seed)
    rec: dict[str, list] = {k: [] for k in ("agentview_rgb", "eye_in_hand_rgb", "proprio", "actions", "executed",
                                           "states")}
    for _ in range(max_steps):
        rec["agentview_rgb"].append(obs["images"]["agentview"])
        rec["eye_in_hand_rgb"].append(obs["images"]["wrist"])
        rec["proprio"].append(obs["proprio"])
        rec["states"].append(env.sim.get_state().flatten())
        a = np.asarray(expert.infer(obs).actions[0], dtype=np.float64)
        executed = a.copy()
        if noise > 0:
            executed[:3] = np.clip(executed[:3] + rng.normal(0.0, noise, 3), -1, 1)
        rec["actions"].append(a.astype(np.float32))
        rec["executed"].append(executed.astype(np.float32))
        obs, _r, _term, _trunc, info = env.step(executed)
        if info["success"]:
            proprio = np.stack(rec["proprio"])
            t = len(rec["actions"])
            dones = np.zeros(t, np.uint8)
            dones[-1] = 1
            return {"obs": {"agentview_rgb": np.stack(rec["agentview_rgb"]),
                            "eye_in_hand_rgb": np.stack(rec["eye_in_hand_rgb"]),
                            "ee_pos": proprio[:, :3], "ee_ori": proprio[:, 3:6], "gripper_states": proprio[:, 6:8],
                            "proprio": proprio},
                    "actions": np.stack(rec["actions"]), "executed_actions": np.stack(rec["executed"]),
                    "states": np.stack(rec["states"]), "rewards": dones.astype(np.float32), "dones": dones}
    return None


# --------------------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------------------
class LiberoDemos:
    """The recorded demonstrations of a LIBERO suite. ``episodes()`` -> list of dicts (images per camera
    (T,H,W,3) upright, proprio (T,8), actions (T,7), instruction, task); ``dataset(chunk)`` -> torch Dataset."""

    CAMS = {"agentview": "agentview_rgb", "wrist": "eye_in_hand_rgb"}

    def __init__(self, files: dict[str, Path]):
        self.files = files  # task name -> hdf5 path

    def info(self) -> dict[str, Any]:
        import h5py

        out = {}
        for task, path in self.files.items():
            with h5py.File(path, "r") as f:
                a = f["data"].attrs
                out[task] = {"path": str(path), "num_demos": int(a.get("num_demos", 0)), "frames": int(a.get("total", 0)),
                             "attempts": int(a.get("attempts", 0)), "expert_version": a.get("expert_version"),
                             "noise": a.get("noise"), "bytes": path.stat().st_size}
        return out

    def episodes(self) -> list[dict[str, Any]]:
        import h5py

        eps = []
        for task, path in self.files.items():
            with h5py.File(path, "r") as f:
                data = f["data"]
                instr = str(data.attrs["language_instruction"])
                for k in sorted((k for k in data.keys() if k.startswith("demo_")), key=lambda s: int(s[5:])):
                    g = data[k]
                    eps.append({"images": {c: g["obs"][h][()] for c, h in self.CAMS.items()},
                                "proprio": g["obs"]["proprio"][()].astype(np.float32),
                                "actions": g["actions"][()].astype(np.float32),
                                "instruction": instr, "task": task})
        return eps

    def __iter__(self):
        return iter(self.episodes())

    def __len__(self) -> int:
        return sum(v["num_demos"] for v in self.info().values())

    def dataset(self, chunk: int = 8) -> LiberoDemoDataset:
        return LiberoDemoDataset(self.files, chunk)


def _dataset_base() -> type:
    from torch.utils.data import Dataset

    return Dataset


class LiberoDemoDataset(_dataset_base()):  # type: ignore[misc]
    """Frame samples with action-chunk targets. Item i::

        {"images": {"agentview": uint8 (H,W,3), "wrist": uint8 (H,W,3)}, "proprio": float32 (8,),
         "actions": float32 (chunk, 7)  (a_t .. a_{t+chunk-1}, the last action repeated past the episode end),
         "action_mask": bool (chunk,) (False on the padded steps), "instruction": str, "task": str}

    Reads lazily from the HDF5 files (one handle per process; safe with DataLoader workers).
    """

    def __init__(self, files: dict[str, Path], chunk: int = 8):
        import h5py

        if chunk < 1:
            raise ValueError(f"chunk={chunk} must be >= 1")
        self.files, self.chunk = dict(files), int(chunk)
        self.index: list[tuple[str, str, int, int]] = []  # (task, demo key, t, T)
        self.instructions: dict[str, str] = {}
        for task, path in self.files.items():
            with h5py.File(path, "r") as f:
                data = f["data"]
                self.instructions[task] = str(data.attrs["language_instruction"])
                for k in sorted((k for k in data.keys() if k.startswith("demo_")), key=lambda s: int(s[5:])):
                    n = int(data[k].attrs["num_samples"])
                    self.index += [(task, k, t, n) for t in range(n)]
        self._handles: dict[str, Any] = {}
        self._pid = os.getpid()

    def _file(self, task: str) -> Any:
        import h5py

        if self._pid != os.getpid():  # forked DataLoader worker: reopen
            self._handles, self._pid = {}, os.getpid()
        if task not in self._handles:
            self._handles[task] = h5py.File(self.files[task], "r")
        return self._handles[task]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        task, key, t, n = self.index[i]
        g = self._file(task)["data"][key]
        stop = min(t + self.chunk, n)
        acts = g["actions"][t:stop]
        mask = np.zeros(self.chunk, bool)
        mask[: stop - t] = True
        if stop - t < self.chunk:
            acts = np.concatenate([acts, np.repeat(acts[-1:], self.chunk - (stop - t), axis=0)])
        return {"images": {c: torch.from_numpy(g["obs"][h][t]) for c, h in LiberoDemos.CAMS.items()},
                "proprio": torch.from_numpy(g["obs"]["proprio"][t].astype(np.float32)),
                "actions": torch.from_numpy(acts.astype(np.float32)), "action_mask": torch.from_numpy(mask),
                "instruction": self.instructions[task], "task": task}


def load_demonstrations(suite: Any, root: Path | None = None) -> LiberoDemos:
    files = {}
    missing = []
    import h5py

    for task in suite.tasks():
        path = demo_path(task.meta["suite"], task.name, root)
        n = 0
        if path.exists():
            try:
                with h5py.File(path, "r") as f:
                    n = int(f["data"].attrs.get("num_demos", 0)) if "data" in f else 0
            except OSError as e:  # an interrupted first write: report it, keep going
                print(f"[libero demos] unreadable {path}: {e}", file=sys.stderr)
        (files.__setitem__(task.name, path) if n > 0 else missing.append(task.name))
    if not files:
        raise MissingArtifactError(f"no LIBERO demonstrations for {suite.suite_id} under "
                                   f"{Path(root or DEFAULT_ROOT)}; run `make demos SUITE={suite.suite_id}`")
    if missing:
        print(f"[libero demos] {len(missing)} task(s) of {suite.suite_id} have no demos: {missing[:3]}...",
              file=sys.stderr)
    return LiberoDemos(files)


def main(argv: list[str] | None = None) -> int:
    from harness.plugins import make_suite

    ap = argparse.ArgumentParser(description="record LIBERO expert demonstrations (HDF5, robomimic layout)")
    ap.add_argument("--suite", default="libero_object-v1", help="suite id (libero_object or libero_object-v1, ...)")
    ap.add_argument("--per-task", type=int, default=20, help="successful demos per task")
    ap.add_argument("--tasks", default=None, help="comma-separated task indices or names (default: all)")
    ap.add_argument("--noise", type=float, default=0.1, help="DART: N(0, s) on executed xyz (labels stay clean)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--out", default=None, help=f"root folder (default {DEFAULT_ROOT})")
    ap.add_argument("--workers", type=int, default=1, help="processes (tasks are split between them)")
    ap.add_argument("--max-attempts", type=int, default=None,
                    help="give a task up after this many expert attempts in total (default 3 * per-task + 5)")
    a = ap.parse_args(argv)
    sid = a.suite if a.suite == "libero" or a.suite.endswith("-v1") else f"{a.suite}-v1"
    suite = make_suite(sid)
    tasks = suite.tasks()
    if a.tasks:
        want = a.tasks.split(",")
        tasks = [t for t in tasks if t.name in want or str(t.index) in want]
        if not tasks:
            raise SystemExit(f"--tasks {a.tasks!r} matches no task of {sid}")
    if a.max_attempts is not None and a.max_attempts < 1:
        ap.error(f"--max-attempts must be >= 1, got {a.max_attempts}")
    root = Path(a.out) if a.out else None
    t0 = time.perf_counter()
    if a.workers > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(a.workers) as pool:
            pool.starmap(_record_one, [(sid, t.name, a.per_task, root, a.noise, a.image_size, a.max_attempts)
                                        for t in tasks])
    else:
        for t in tasks:
            _record_one(sid, t.name, a.per_task, root, a.noise, a.image_size, a.max_attempts)
    demos = load_demonstrations(suite, root)
    info = demos.info()
    n = sum(v["num_demos"] for v in info.values())
    frames = sum(v["frames"] for v in info.values())
    size = sum(v["bytes"] for v in info.values())
    att = sum(v["attempts"] for v in info.values())
    print(f"[libero demos] {sid}: {n} demos ({frames} frames) from {att} attempts in {len(info)} files, "
          f"{size / 1e6:.1f} MB, {time.perf_counter() - t0:.0f} s -> {Path(root or DEFAULT_ROOT)}")
    return 0


def _record_one(sid: str, task_name: str, per_task: int, root: Path | None, noise: float, size: int,
                max_attempts: int | None = None) -> None:
    from harness.plugins import make_suite

    suite = make_suite(sid)
    task = suite.task(task_name)
    record_task(suite, task, per_task, root=root, noise=noise, image_size=size, max_attempts=max_attempts,
                log=lambda s: print(s, flush=True))


if __name__ == "__main__":
    sys.exit(main())
