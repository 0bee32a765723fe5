"""Demonstrations for behaviour cloning: a suite's `demonstrations()` (whatever shape the suite gives) turned
into flat arrays, or — for suites without recorded demos (the mock suite) — expert roll-outs made here from
training seeds that are disjoint from the evaluation seeds."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.interfaces import EpisodeSpec, Suite, derive_seed


@dataclass
class Episode:
    images: dict[str, np.ndarray]  # cam -> uint8 (T, H, W, 3)
    proprio: np.ndarray  # (T, P) float32
    actions: np.ndarray  # (T, A) float32 (the expert's clean labels)
    instruction: str
    commentary: list[str] | None = None  # per step (driving)
    task: str = ""


def train_seed(suite_id: str, task_name: str, i: int) -> int:
    return derive_seed(suite_id, "reference-train", task_name, i)


def evaluation_seeds(suite: Suite) -> set[int]:
    """Every seed any of the suite's evaluation profiles uses: training roll-outs skip them."""
    return {e.seed for p in suite.profiles() for e in suite.episodes(p)}


def _open_labelled_env(suite: Suite, task: Any) -> Any:
    """A privileged env (the expert reads its state) that still renders the policy's cameras."""
    env = suite.make_env(task, privileged=True)
    if getattr(env, "render_images", True) is False:  # LIBERO skips rendering for the privileged expert
        env.close()
        env = suite.make_env(task, privileged=True, render=True)
    return env


def _shrink(img: np.ndarray, size: int | None) -> np.ndarray:
    """Area-downsample a uint8 (H, W, 3) image by an integer factor to ``size`` (no-op when None/equal)."""
    if not size or img.shape[0] == size:
        return img
    f = img.shape[0] // size
    return img[: size * f, : size * f].reshape(size, f, size, f, 3).mean(axis=(1, 3)).round().astype(np.uint8)


def collect_expert_episodes(suite: Suite, per_task: int, *, dart_noise: float = 0.0, max_tries: int = 3,
                            progress: bool = True, tasks: list | None = None,
                            store_size: int | None = None, start: int = 0) -> list[Episode]:
    """Roll out the suite's privileged expert from training seeds; keep successful episodes.

    Observations are recorded without ``privileged``; the label is the expert's clean action; the executed
    action gets N(0, dart_noise) (DART) so the demos contain small recoveries. ``start`` offsets the training-seed
    index, so a later collection adds new seeds instead of repeating ``0 .. per_task * max_tries``.
    """
    from tqdm import tqdm

    eval_seeds = evaluation_seeds(suite)
    expert = suite.expert()
    out: list[Episode] = []
    bar = tqdm(total=per_task * len(tasks if tasks is not None else suite.tasks()), desc=f"demos {suite.suite_id}", disable=not progress)
    for task in tasks if tasks is not None else suite.tasks():
        env = _open_labelled_env(suite, task)
        got, i = 0, start
        while got < per_task and i < start + per_task * max_tries:
            seed = train_seed(suite.suite_id, task.name, i)
            i += 1
            if seed in eval_seeds:
                continue  # never train on an evaluation seed
            spec = EpisodeSpec(f"{task.name}/train{i:04d}", task, 100000 + i, seed, suite.max_steps(task))
            rng = np.random.default_rng(seed)
            # placement_seed: suites with fixed evaluation init states (LIBERO) sample a fresh placement instead
            obs, info = env.reset(seed=seed, options={"episode": spec, "placement_seed": seed})
            expert.reset(task, seed)
            imgs: dict[str, list] = {c: [] for c in obs["images"]}
            prop, acts, texts = [], [], []
            success, steps = False, 0
            while steps < spec.max_steps and not success:
                chunk = expert.infer(obs)
                for a in chunk.executed():
                    for c, im in obs["images"].items():
                        imgs[c].append(_shrink(im, store_size))
                    prop.append(np.asarray(obs["proprio"], np.float32))
                    acts.append(np.asarray(a, np.float32))
                    texts.append(str(chunk.extras.get("text", "")))
                    noisy = a + rng.normal(0, dart_noise, size=np.shape(a)) if dart_noise > 0 else a
                    lo, hi = env.action_space.low, env.action_space.high
                    obs, _, term, trunc, info = env.step(np.clip(noisy, lo, hi).astype(env.action_space.dtype))
                    steps += 1
                    success = bool(info.get("success", False))
                    if term or trunc or success or steps >= spec.max_steps:
                        break
                if term or trunc:
                    break
            if success:
                out.append(Episode({c: np.stack(v) for c, v in imgs.items()}, np.stack(prop), np.stack(acts),
                                   task.instruction, texts if any(texts) else None, task.name))
                got += 1
                bar.update(1)
        env.close()
    bar.close()
    return out


def collect_dagger_episodes(suite: Suite, policy: Any, per_task: int, *, beta: float = 0.0, start: int = 0,
                            progress: bool = True, tasks: list | None = None, store_size: int | None = None,
                            min_frames: int = 8) -> tuple[list[Episode], dict[str, Any]]:
    """DAgger (Ross et al. 2011) with the suite's privileged expert as the labeller.

    The learned ``policy`` drives (its chunk is replanned every ``n_execute`` steps; with probability ``beta``
    per chunk the expert's action is executed instead); every visited state is labelled with the expert's clean
    action. Episodes are kept whatever their outcome, up to the step where they ended (a crash included), so the
    data covers the states the policy itself reaches. Seeds are training seeds (``train_seed(..., start + i)``),
    never evaluation seeds. Returns the episodes and counts (policy success rate on these training seeds).
    """
    from tqdm import tqdm

    eval_seeds = evaluation_seeds(suite)
    expert = suite.expert()
    out: list[Episode] = []
    stats = {"episodes": 0, "policy_successes": 0, "frames": 0, "expert_chunks": 0, "chunks": 0}
    task_list = tasks if tasks is not None else suite.tasks()
    bar = tqdm(total=per_task * len(task_list), desc=f"dagger {suite.suite_id}", disable=not progress)
    for task in task_list:
        env = _open_labelled_env(suite, task)
        for i in range(start, start + per_task):
            seed = train_seed(suite.suite_id, task.name, i)
            if seed in eval_seeds:
                continue
            spec = EpisodeSpec(f"{task.name}/dagger{i:04d}", task, 200000 + i, seed, suite.max_steps(task))
            rng = np.random.default_rng(seed)
            # placement_seed: suites with fixed evaluation init states (LIBERO) sample a fresh placement instead
            obs, info = env.reset(seed=seed, options={"episode": spec, "placement_seed": seed})
            expert.reset(task, seed)
            policy.reset(task, seed)
            imgs: dict[str, list] = {c: [] for c in obs["images"]}
            prop, acts, texts = [], [], []
            success, steps, queue, term, trunc = False, 0, [], False, False
            while steps < spec.max_steps and not success and not (term or trunc):
                label = expert.infer(obs)
                if not queue:
                    stats["chunks"] += 1
                    use_expert = rng.random() < beta
                    stats["expert_chunks"] += int(use_expert)
                    src = label if use_expert else policy.infer(obs)
                    queue = list(src.executed())
                for c, im in obs["images"].items():
                    imgs[c].append(_shrink(im, store_size))
                prop.append(np.asarray(obs["proprio"], np.float32))
                acts.append(np.asarray(label.actions[0], np.float32))
                texts.append(str(label.extras.get("text", "")))
                a = np.asarray(queue.pop(0), np.float32)
                lo, hi = env.action_space.low, env.action_space.high
                obs, _, term, trunc, info = env.step(np.clip(a, lo, hi).astype(env.action_space.dtype))
                steps += 1
                success = bool(info.get("success", False))
            stats["episodes"] += 1
            stats["policy_successes"] += int(success)
            if len(acts) >= min_frames:
                out.append(Episode({c: np.stack(v) for c, v in imgs.items()}, np.stack(prop), np.stack(acts),
                                   task.instruction, texts if any(texts) else None, task.name))
                stats["frames"] += len(acts)
            bar.update(1)
        env.close()
    bar.close()
    return out, stats


def _as_episode(ep: Any) -> Episode:
    if isinstance(ep, Episode):
        return ep
    if isinstance(ep, dict):
        d = ep
    else:  # an object with attributes
        d = {k: getattr(ep, k) for k in ("images", "proprio", "actions", "instruction") if hasattr(ep, k)}
        for k in ("commentary", "task"):
            if hasattr(ep, k):
                d[k] = getattr(ep, k)
    com = d.get("commentary")
    if com is not None and not isinstance(com, (list, tuple)):
        com = [str(c) for c in np.asarray(com).tolist()]
    return Episode({c: np.asarray(v) for c, v in d["images"].items()}, np.asarray(d["proprio"], np.float32),
                   np.asarray(d["actions"], np.float32), str(d["instruction"]),
                   list(com) if com is not None else None, str(d.get("task", "")))


def episodes_from_suite(suite: Suite) -> list[Episode]:
    """The suite's recorded demonstrations as a list of :class:`Episode` (accepts a list of episode dicts or
    objects, or an object with ``episodes()``)."""
    demos = suite.demonstrations()
    if callable(getattr(demos, "episodes", None)):
        demos = demos.episodes()
    return [_as_episode(e) for e in demos]  # otherwise the object iterates over full episode dicts


def data_hash(episodes: list[Episode]) -> str:
    h = hashlib.sha256()
    for ep in episodes:
        h.update(ep.instruction.encode())
        h.update(np.ascontiguousarray(ep.actions).tobytes())
        h.update(np.ascontiguousarray(ep.proprio).tobytes())
        for c in sorted(ep.images):
            h.update(np.ascontiguousarray(ep.images[c][:: max(1, len(ep.images[c]) // 4)]).tobytes())
    return h.hexdigest()[:16]


def save_episodes(episodes: list[Episode], path: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for i, ep in enumerate(episodes):
        for c, v in ep.images.items():
            arrays[f"{i}/img/{c}"] = v
        arrays[f"{i}/proprio"], arrays[f"{i}/actions"] = ep.proprio, ep.actions
        meta.append({"instruction": ep.instruction, "commentary": ep.commentary, "task": ep.task,
                     "cams": list(ep.images)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    tmp.replace(path)


def load_episodes(path: Path) -> list[Episode]:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["__meta__"]).decode())
        return [Episode({c: z[f"{i}/img/{c}"] for c in m["cams"]}, z[f"{i}/proprio"], z[f"{i}/actions"],
                        m["instruction"], m["commentary"], m["task"]) for i, m in enumerate(meta)]


class FlatDemos:
    """All frames of all episodes as arrays, images resized to the model's size and edge-padded for shifts."""

    def __init__(self, episodes: list[Episode], cameras: list[str], image_size: int, chunk: int, pad: int):
        self.cameras, self.size, self.chunk, self.pad = cameras, image_size, chunk, pad
        self.images = {c: torch.cat([self._resize(e.images[c]) for e in episodes]) for c in cameras}
        self.proprio = torch.from_numpy(np.concatenate([e.proprio for e in episodes]).astype(np.float32))
        self.actions = torch.from_numpy(np.concatenate([e.actions for e in episodes]).astype(np.float32))
        lengths = [len(e.actions) for e in episodes]
        starts = np.cumsum([0] + lengths[:-1])
        self.ep_end = torch.from_numpy(np.concatenate([np.full(n, s + n - 1) for s, n in zip(starts, lengths)]))
        self.episode = torch.from_numpy(np.concatenate([np.full(n, i) for i, n in enumerate(lengths)]))
        self.instructions = [e.instruction for e in episodes]
        self.commentary = [c for e in episodes for c in (e.commentary or [""] * len(e.actions))]
        self.n = len(self.actions)

    def _resize(self, imgs: np.ndarray) -> torch.Tensor:
        out = []
        for i in range(0, len(imgs), 512):
            x = torch.from_numpy(imgs[i:i + 512]).permute(0, 3, 1, 2).float()
            if x.shape[-1] != self.size or x.shape[-2] != self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="area")
            if self.pad:
                x = F.pad(x, (self.pad,) * 4, mode="replicate")
            out.append(x.round().clamp(0, 255).to(torch.uint8))
        return torch.cat(out)  # (N, 3, S+2p, S+2p)

    def action_chunks(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, chunk, A): actions idx..idx+chunk-1, the episode's last action repeated past its end."""
        steps = idx[:, None] + torch.arange(self.chunk)[None]
        steps = torch.minimum(steps, self.ep_end[idx][:, None])
        return self.actions[steps]

    def images_at(self, idx: torch.Tensor, gen: torch.Generator | None, augment: bool) -> dict[str, torch.Tensor]:
        """{cam: float (B, H, W, 3) in [0, 255]}: random shift (crop of the padded frame) + colour jitter."""
        out = {}
        b, s, p = len(idx), self.size, self.pad
        for c in self.cameras:
            full = self.images[c][idx]
            if augment and p:
                ox = torch.randint(0, 2 * p + 1, (b,), generator=gen)
                oy = torch.randint(0, 2 * p + 1, (b,), generator=gen)
                ar = torch.arange(s)
                rows = (oy[:, None] + ar[None])[:, None, :, None].expand(b, 3, s, full.shape[3])
                cols = (ox[:, None] + ar[None])[:, None, None, :].expand(b, 3, s, s)
                x = full.gather(2, rows)
                x = x.gather(3, cols)
            else:
                x = full[:, :, p:p + s, p:p + s]
            x = x.float()
            if augment:
                bright = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.2 * 255
                contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.2
                mean = x.mean(dim=(1, 2, 3), keepdim=True)
                x = ((x - mean) * contrast + mean + bright).clamp(0, 255)
            out[c] = x.permute(0, 2, 3, 1)
        return out


def main(argv: list[str] | None = None) -> int:
    """Collect expert demos for suites that have none recorded: one part file per task range (parallel)."""
    import argparse

    from harness.plugins import make_suite

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--per-task", type=int, default=20)
    ap.add_argument("--tasks", default="", help="task index range a-b (inclusive); default all")
    ap.add_argument("--dart", type=float, default=0.0)
    ap.add_argument("--size", type=int, default=0, help="store images at this size (integer downsampling)")
    ap.add_argument("--start", type=int, default=0, help="first training-seed index (add seeds to an earlier part)")
    ap.add_argument("--dagger", default=None, metavar="CHECKPOINT",
                    help="DAgger: the reference checkpoint folder that drives; the expert labels (see collect_dagger_episodes)")
    ap.add_argument("--beta", type=float, default=0.0, help="DAgger: probability that a chunk is the expert's")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    suite = make_suite(args.suite)
    tasks = suite.tasks()
    if args.tasks:
        a, b = (int(x) for x in args.tasks.split("-"))
        tasks = tasks[a:b + 1]
    if args.dagger:
        torch.set_num_threads(1)  # 2 threads beside a simulator and other jobs were ~10x slower per infer here
        from harness.interfaces import DataSource
        from harness.plugins import make_method

        method = make_method("reference")
        cfg = method.config(suite.suite_id, overrides={"checkpoint": args.dagger})
        policy = method.distill(None, DataSource(suite, Path(__file__).resolve().parents[2] / ".cache"), cfg)
        eps, stats = collect_dagger_episodes(suite, policy, args.per_task, beta=args.beta, start=args.start,
                                             tasks=tasks, store_size=args.size or None)
        print(f"DAgger with {args.dagger} (beta {args.beta}): {stats}")
        Path(args.out).with_suffix(".json").write_text(json.dumps({
            "kind": "dagger", "checkpoint": args.dagger, "beta": args.beta, "start": args.start,
            "per_task": args.per_task, "stats": stats}, indent=1))
        save_episodes(eps, Path(args.out))
        print(f"{len(eps)} episodes, {sum(len(e.actions) for e in eps)} frames -> {args.out}")
        return 0
    eps = collect_expert_episodes(suite, args.per_task, dart_noise=args.dart, tasks=tasks,
                                  store_size=args.size or None, start=args.start)
    save_episodes(eps, Path(args.out))
    print(f"{len(eps)} episodes, {sum(len(e.actions) for e in eps)} frames -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
