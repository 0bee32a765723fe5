"""ActDistill training: stage 1 (teacher probing, cached by hash) and stage 2 (router + student distillation,
resumable, artifact cached by hash of (teacher checkpoint, data, config)).

Layout under ``data.cache_dir`` (= <cache>/artifacts/actdistill):
    stage1-<key>/teacher_cache.safetensors + stage1.json   per-layer teacher semantics/probe actions, teacher heads,
                                                            layer importance (reused by every stage-2 config that
                                                            shares teacher, data and the stage-1 settings)
    student-<key>/student.safetensors + manifest.json      the deployed student (backbone + expert + router only)
    student-<key>/train/                                    resumable training state (weights + AdamW + step)
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from methods.actdistill.config import ActDistillConfig
from methods.actdistill.student import (Encapsulation, Router, expert_tokens, flow_targets, gated_pass, graph_loss,
                                        hard_gates, layer_weights, node_mask, router_balance_loss, task_loss)
from methods.reference import checkpoint as ckpt
from methods.reference.data import FlatDemos, data_hash
from methods.reference.model import PAD, ReferenceVLA

ROOT = Path(__file__).resolve().parents[2]
STAGE1_FIELDS = ("semantic_dim", "gat_layers", "gat_heads", "gat_dim", "knn_k", "probe_hidden", "head_dropout",
                 "stage1_steps", "stage1_lr", "stage1_batch", "max_frames", "importance_frames", "seed")
ARTIFACT = "student.safetensors"
MANIFEST = "manifest.json"


def _log(s: str) -> None:
    print(s, file=sys.stderr, flush=True)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def teacher_id(teacher: Any) -> str:
    """The teacher checkpoint's identity: sha256 of its weights (from its manifest)."""
    files = (getattr(teacher, "manifest", None) or {}).get("files", {})
    return files.get(ckpt.WEIGHTS) or _digest(files) or "unknown"


# --------------------------------------------------------------------------------------------------
# data: the suite's demonstrations (data.demos()), as flat frames with text ids
# --------------------------------------------------------------------------------------------------
def get_episodes(data: Any, cfg: ActDistillConfig, teacher: Any = None) -> tuple[list, str]:
    """The demos a reference teacher was trained on (matched by its manifest's data hash). Without a manifest:
    data.demos() (the suite's expert demos); suites without recorded demos (mock): the reference teacher's
    demos (.cache/reference/<suite>/), else expert roll-outs from training seeds (cached)."""
    from methods.reference.data import collect_expert_episodes, episodes_from_suite, load_episodes, save_episodes

    suite = data.suite
    manifest = getattr(teacher, "manifest", None) or {}
    if (manifest.get("data") or {}).get("hash"):
        from methods.reference.train import teacher_episodes

        eps, src, _ = teacher_episodes(suite, manifest, _log)
        return eps, src
    try:
        return episodes_from_suite(suite), "suite.demonstrations()"
    except (NotImplementedError, ImportError, FileNotFoundError) as e:
        _log(f"[actdistill] {suite.suite_id}.demonstrations() unavailable ({type(e).__name__}: {e})")
    ref = ROOT / ".cache" / "reference" / suite.suite_id
    parts = sorted(ref.glob("demos_part*.npz"))
    if parts:
        return [e for p in parts for e in load_episodes(p)], f"reference teacher's demos ({ref})"
    if (ref / "demos.npz").exists():
        return load_episodes(ref / "demos.npz"), f"reference teacher's demos ({ref / 'demos.npz'})"
    path = Path(data.cache_dir) / f"demos-{suite.suite_id}-{cfg.demos_per_task}.npz"
    if path.exists():
        return load_episodes(path), f"expert roll-outs from training seeds ({path})"
    _log(f"[actdistill] rolling out {suite.suite_id}'s expert from training seeds ({cfg.demos_per_task}/task)")
    eps = collect_expert_episodes(suite, cfg.demos_per_task, progress=False)
    save_episodes(eps, path)
    return eps, f"expert roll-outs from training seeds ({path})"


class Frames:
    """The cached subset of demonstration frames: images (no augmentation, so that cached teacher features match
    the student's inputs), text ids, proprio, action chunks, first actions, and a fixed noise per frame."""

    def __init__(self, episodes: list, teacher: Any, max_frames: int, seed: int):
        m: ReferenceVLA = teacher.model
        mc = m.cfg
        self.demos = FlatDemos(episodes, list(mc.cameras), mc.image_size, mc.chunk, pad=0)
        n = self.demos.n
        self.idx = torch.linspace(0, n - 1, min(n, max_frames)).round().long().unique()
        texts = [teacher.tok.encode(s, mc.max_text_len) or [1] for s in self.demos.instructions]
        t = max(len(x) for x in texts)
        self.text_of_ep = torch.full((len(texts), t), PAD, dtype=torch.long)
        for i, x in enumerate(texts):
            self.text_of_ep[i, :len(x)] = torch.tensor(x)
        g = torch.Generator().manual_seed(seed * 1_000_003 + 17)
        self.noise = torch.randn(len(self.idx), mc.chunk, mc.action_dim, generator=g)

    def __len__(self) -> int:
        return len(self.idx)

    def batch(self, pos: torch.Tensor) -> dict[str, Any]:
        """pos: positions into the cached subset."""
        sel = self.idx[pos]
        text = self.text_of_ep[self.demos.episode[sel]]
        keep = int((text != PAD).any(0).nonzero().max()) + 1  # drop all-pad columns
        text = text[:, :keep]
        return {"images": self.demos.images_at(sel, None, augment=False), "text": text, "text_mask": text != PAD,
                "proprio": self.demos.proprio[sel], "actions": self.demos.action_chunks(sel),
                "noise": self.noise[pos]}


def embed(model: ReferenceVLA, b: dict[str, Any]):
    return model.embed_prefix(b["images"], b["text"], b["proprio"], b["text_mask"])


def semantic_stream(model: ReferenceVLA, noise: torch.Tensor) -> torch.Tensor:
    """The expert tokens of the first inference step (t = 1, x = the frame's fixed noise)."""
    return expert_tokens(model, noise, torch.ones(noise.shape[0]))


def first_action(model: ReferenceVLA, actions: torch.Tensor) -> torch.Tensor:
    return ((actions - model.action_mean) / model.action_std)[:, 0]


# --------------------------------------------------------------------------------------------------
# stage 1: probe the teacher, cache its per-layer graph features and probe actions
# --------------------------------------------------------------------------------------------------
def head_signal(model: ReferenceVLA, st: Any, x_t: torch.Tensor, t: torch.Tensor,
                skip: frozenset[int] | set[int] = frozenset()) -> torch.Tensor:
    """What the action head outputs: the velocity at (x_t, t) (flow), else actions / logits (x_t, t unused)."""
    if model.cfg.head == "flow":
        return model.velocity(st, x_t, t, skip=skip)
    return model.head_output(st, x_t.shape[0], skip=skip)


def layer_importance(model: ReferenceVLA, frames: Frames, n: int) -> torch.Tensor:
    """Action-guided importance of each layer: MSE of the teacher's velocity (fixed noise, t = 1 and t = 0.5)
    when that one layer is skipped, against the full teacher, over ``n`` frames."""
    pos = torch.linspace(0, len(frames) - 1, min(n, len(frames))).round().long().unique()
    out = torch.zeros(model.n_layers)
    with torch.no_grad():
        for chunk in pos.split(64):
            b = frames.batch(chunk)
            for t_val in (1.0, 0.5):
                t = torch.full((len(chunk),), t_val)
                x_t = b["noise"]  # a point on the path is not needed: the importance only compares layer sets
                full = head_signal(model, model.forward_prefix(embed(model, b)), x_t, t)
                for l in range(model.n_layers):
                    v = head_signal(model, model.forward_prefix(embed(model, b), skip={l}), x_t, t, {l})
                    out[l] += F.mse_loss(v, full, reduction="sum").item()
                if model.cfg.head != "flow":
                    break  # no time variable: one pass
    return out / out.sum().clamp_min(1e-12)


def stage1(teacher: Any, frames: Frames, cfg: ActDistillConfig, folder: Path, progress: bool = True
           ) -> dict[str, Any]:
    """Train per-layer semantic heads + probes on the frozen teacher (MSE of probe action to ground truth, mean
    over layers, as the paper's train_teacher_probing.py), then cache per-frame features. Reused when present."""
    path = folder / "teacher_cache.safetensors"
    if path.exists() and (folder / "stage1.json").exists():
        t = load_file(str(path))
        meta = json.loads((folder / "stage1.json").read_text())
        _log(f"[actdistill] stage 1 cache hit: {folder}")
        return {"sem": t["sem"], "act": t["act"], "importance": t["importance"], "heads": {
            k[len("heads."):]: v for k, v in t.items() if k.startswith("heads.")}, "meta": meta, "hit": True}
    from tqdm import tqdm

    m: ReferenceVLA = teacher.model.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    L, A = m.n_layers, m.cfg.action_dim
    importance = layer_importance(m, frames, cfg.importance_frames)
    heads = Encapsulation(L, m.cfg.width, A, cfg)
    curve = []
    if cfg.use_graph:
        torch.manual_seed(cfg.seed)
        opt = torch.optim.AdamW(heads.parameters(), lr=cfg.stage1_lr, weight_decay=0.01)
        gen = torch.Generator().manual_seed(cfg.seed)
        heads.train()
        bar = tqdm(range(cfg.stage1_steps), desc="actdistill stage 1 (teacher probing)", disable=not progress,
                   mininterval=5, dynamic_ncols=True)
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = cfg.stage1_lr * 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.stage1_steps)))
            pos = torch.randint(0, len(frames), (cfg.stage1_batch,), generator=gen)
            b = frames.batch(pos)
            with torch.no_grad():
                st = embed(m, b)
                _, _, nodes = gated_pass(m, st, None, [semantic_stream(m, b["noise"])], collect=0)
            mask = node_mask(st, m.cfg.chunk, nodes[0].shape[1] != st.x.shape[1])
            _, act = heads(nodes, mask)
            gt = first_action(m, b["actions"])
            loss = torch.stack([F.mse_loss(a, gt) for a in act]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 20 == 0 or step == cfg.stage1_steps - 1:
                per_layer = [round(float(F.mse_loss(a, gt)), 4) for a in act.detach()]
                curve.append({"step": step, "loss": float(loss.detach()), "per_layer_mse": per_layer})
                bar.set_postfix(loss=f"{float(loss):.4f}")
        bar.close()
    heads.eval()
    sems, acts = [], []
    with torch.no_grad():
        if cfg.use_graph:
            for chunk in torch.arange(len(frames)).split(64):
                b = frames.batch(chunk)
                st = embed(m, b)
                _, _, nodes = gated_pass(m, st, None, [semantic_stream(m, b["noise"])], collect=0)
                s, a = heads(nodes, node_mask(st, m.cfg.chunk, nodes[0].shape[1] != st.x.shape[1]))
                sems.append(s.transpose(0, 1).to(torch.float16))
                acts.append(a.transpose(0, 1))
    sem = torch.cat(sems) if sems else torch.zeros(0, L, cfg.semantic_dim, dtype=torch.float16)
    act = torch.cat(acts) if acts else torch.zeros(0, L, A)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"sem": sem.contiguous(), "act": act.contiguous(), "importance": importance.contiguous(),
               **{f"heads.{k}": v.detach().contiguous().clone() for k, v in heads.state_dict().items()}}
    save_file(tensors, str(folder / "teacher_cache.tmp"))
    meta = {"frames": len(frames), "curve": curve, "importance": importance.tolist()}
    (folder / "stage1.json").write_text(json.dumps(meta))
    (folder / "teacher_cache.tmp").replace(path)
    for p in m.parameters():
        p.requires_grad_(True)
    return {"sem": sem, "act": act, "importance": importance, "heads": heads.state_dict(), "meta": meta, "hit": False}


# --------------------------------------------------------------------------------------------------
# stage 2: the student
# --------------------------------------------------------------------------------------------------
class Trainables(nn.Module):
    def __init__(self, model: ReferenceVLA, router: Router, heads: Encapsulation | None):
        super().__init__()
        self.model, self.router = model, router
        if heads is not None:
            self.heads = heads


def keep_mask(importance: torch.Tensor, budget: float) -> torch.Tensor:
    n_keep = max(1, min(len(importance), int(round(budget * len(importance)))))
    keep = torch.zeros(len(importance), dtype=torch.bool)
    keep[importance.argsort(descending=True)[:n_keep]] = True
    return keep


def uniform_mask(n_layers: int, budget: float) -> torch.Tensor:
    """round(budget * L) layers evenly spread over the depth, first and last included (Shallow-pi's layer choice)."""
    from methods.shallow_pi.distill import kept_layers

    n_keep = max(1, min(n_layers, int(round(budget * n_layers))))
    keep = torch.zeros(n_layers, dtype=torch.bool)
    keep[kept_layers(n_layers, n_keep, "uniform")] = True
    return keep


ROUTER_INITS = ("importance", "uniform", "zero")


def build_router(model: ReferenceVLA, cfg: ActDistillConfig, importance: torch.Tensor) -> Router:
    """Gate biases +-router_init_logit on the initial layer set: the teacher's most important layers (leave-one-
    out), or layers spread evenly over the depth (``uniform``); ``zero``: plain init (static routers need a set)."""
    if cfg.router_init not in ROUTER_INITS:
        raise ValueError(f"router_init must be one of {' | '.join(ROUTER_INITS)}, got {cfg.router_init!r}")
    r = Router(model.cfg.width, model.n_layers, cfg.router_dim, static=cfg.static)
    if cfg.router_init == "uniform":
        r.init_bias(uniform_mask(model.n_layers, cfg.budget), cfg.router_init_logit)
    elif cfg.router_init == "importance" or cfg.static:
        r.init_bias(keep_mask(importance, cfg.budget), cfg.router_init_logit)
    return r


RUN_ONLY_FIELDS = ("threads", "minutes", "save_every")  # how a run is executed, not what it trains


def artifact_key(tid: str, dhash: str, cfg: ActDistillConfig) -> str:
    conf = {k: v for k, v in cfg.to_dict().items() if k not in RUN_ONLY_FIELDS}
    return _digest({"teacher": tid, "data": dhash, "config": conf})


def validate(model: ReferenceVLA, router: Router | None, frames: Frames, n: int, seed: int,
             aw: torch.Tensor) -> dict[str, float]:
    """The task loss on ``n`` demonstration frames outside the cached training subset, on the inference path:
    hard gates from the router (None = every layer, the teacher). Also the mean fraction of layers run."""
    rest = torch.ones(frames.demos.n, dtype=torch.bool)
    rest[frames.idx] = False
    pool = rest.nonzero().flatten()
    if len(pool) == 0:
        return {}
    pick = pool[torch.linspace(0, len(pool) - 1, min(n, len(pool))).round().long().unique()]
    sub = Frames.__new__(Frames)
    sub.demos, sub.text_of_ep, sub.idx = frames.demos, frames.text_of_ep, pick
    sub.noise = torch.randn(len(pick), *frames.noise.shape[1:], generator=torch.Generator().manual_seed(seed + 5))
    gen = torch.Generator().manual_seed(seed + 11)
    losses, opened = [], []
    model.eval()
    with torch.no_grad():
        for chunk in torch.arange(len(pick)).split(64):
            b = sub.batch(chunk)
            st = embed(model, b)
            gates = None
            if router is not None:
                gates = hard_gates(router.eval()(st)).float()
                opened.append(gates.mean().item())
            if model.cfg.head == "flow":
                a, noise, t, x_t = flow_targets(model, b["actions"], gen)
            else:
                a, noise, t, x_t = (b["actions"] - model.action_mean) / model.action_std, None, None, b["actions"]
            _, hs, _ = gated_pass(model, st, gates, [expert_tokens(model, x_t, t)])
            losses.append(float(task_loss(model, hs[0], a, noise, aw)) * len(chunk))
    out = {"frames": int(len(pick)), "task_loss": sum(losses) / len(pick)}
    if opened:
        out["open_fraction"] = float(np.mean(opened))
    return out


def train_student(teacher: Any, data: Any, cfg: ActDistillConfig, progress: bool = True) -> Path:
    """Returns the artifact folder (trained now, or found in the cache)."""
    episodes, source = get_episodes(data, cfg, teacher)
    dhash = data_hash(episodes)
    tid = teacher_id(teacher)
    key = artifact_key(tid, dhash, cfg)
    out = Path(data.cache_dir) / f"student-{key}"
    if (out / ARTIFACT).exists() and (out / MANIFEST).exists():
        _log(f"[actdistill] artifact cache hit: {out}")
        return out
    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        return _train(teacher, episodes, source, dhash, tid, cfg, out, data, progress)
    finally:
        torch.set_num_threads(threads_before)


def _train(teacher: Any, episodes: list, source: str, dhash: str, tid: str, cfg: ActDistillConfig, out: Path,
           data: Any, progress: bool) -> Path:
    from tqdm import tqdm

    frames = Frames(episodes, teacher, cfg.max_frames, cfg.seed)
    s1_key = _digest({"teacher": tid, "data": dhash, "use_graph": cfg.use_graph,
                      **{k: getattr(cfg, k) for k in STAGE1_FIELDS}})
    s1 = stage1(teacher, frames, cfg, Path(data.cache_dir) / f"stage1-{s1_key}", progress)
    tm: ReferenceVLA = teacher.model
    mc = tm.cfg
    model = copy.deepcopy(tm).train()
    for p in model.parameters():
        p.requires_grad_(True)
    router = build_router(model, cfg, s1["importance"])
    heads = None
    if cfg.use_graph:
        heads = Encapsulation(model.n_layers, mc.width, mc.action_dim, cfg)
        heads.load_state_dict(s1["heads"])  # the student's heads start from the teacher's (self-derived)
    tr = Trainables(model, router, heads).train()
    groups = [{"params": [p for p in model.parameters()], "lr": cfg.lr, "weight_decay": cfg.weight_decay},
              {"params": [p for p in router.parameters()], "lr": cfg.lr_router, "weight_decay": 0.0}]
    if heads is not None:
        groups.append({"params": list(heads.parameters()), "lr": cfg.lr_heads, "weight_decay": cfg.weight_decay})
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.95))
    state_dir = out / "train"
    meta = ckpt.load_state(state_dir, tr, opt)
    step, curve, wall_before = 0, [], 0.0
    if meta is not None:
        step, wall_before = int(meta["step"]), float(meta.get("wall_s", 0.0))
        curve = meta.get("curve", [])
        _log(f"[actdistill] resumed stage 2 from {state_dir} at step {step}")
    w = layer_weights(model.n_layers, cfg.gamma, cfg.normalize_layer_weights)
    aw = ((teacher.manifest.get("train") or {}).get("config") or {}).get("action_weights")
    aw = torch.tensor(aw, dtype=torch.float32) if aw else torch.ones(mc.action_dim)
    t0 = time.time()

    def save() -> None:
        ckpt.save_state(state_dir, tr, opt, {"step": step, "curve": curve,
                                             "wall_s": wall_before + time.time() - t0})

    bar = tqdm(total=cfg.steps, initial=step, desc="actdistill stage 2 (student)", disable=not progress,
               mininterval=5, dynamic_ncols=True)
    acc: dict[str, list[float]] = {}
    while step < cfg.steps:
        frac = step / max(1, cfg.steps)
        for g in opt.param_groups:
            warm = min(1.0, (step + 1) / max(1, cfg.warmup))
            g["lr"] = g["base_lr"] * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        gen = torch.Generator().manual_seed(cfg.seed * 7_777_777 + step)
        pos = torch.randint(0, len(frames), (cfg.batch,), generator=gen)
        b = frames.batch(pos)
        st = embed(model, b)
        logits = router(st)
        soft = torch.sigmoid(logits)
        if cfg.static:
            gates = (soft >= cfg.threshold).float()
        elif frac < cfg.soft_fraction:
            gates = soft
        else:  # straight-through: the forward uses the inference gates, gradients flow through the soft ones
            gates = (soft >= cfg.threshold).float() + soft - soft.detach()
        if mc.head == "flow":
            a, noise, t, x_t = flow_targets(model, b["actions"], gen)
        else:  # regression / discrete heads: learned action queries, the teacher's L1 / CE on normalised actions
            a, noise, t = (b["actions"] - model.action_mean) / model.action_std, None, None
            x_t = a
        streams = [expert_tokens(model, x_t, t)]
        if heads is not None:
            streams.append(semantic_stream(model, b["noise"]))
        _, hs, nodes = gated_pass(model, st, gates, streams, collect=1 if heads is not None else None)
        task = task_loss(model, hs[0], a, noise, aw)
        bal = (soft.new_zeros(()) if cfg.static
               else router_balance_loss(soft, cfg.budget, cfg.threshold, cfg.balance_on))
        total = cfg.task_weight * task + cfg.balance_weight * bal
        parts = {"task": float(task), "balance": float(bal)}
        if heads is not None:
            sem_s, act_s = heads(nodes, node_mask(st, mc.chunk, nodes[0].shape[1] != st.x.shape[1]))
            sem_t = s1["sem"][pos].float().transpose(0, 1)
            act_t = s1["act"][pos].transpose(0, 1)
            gl, gp = graph_loss(sem_s, act_s, sem_t, act_t, first_action(model, b["actions"]), w,
                                cfg.alpha, cfg.beta, cfg.eta)
            gl = gl * (cfg.graph_weight / (model.n_layers if cfg.graph_reduce == "mean" else 1))
            total = total + gl
            parts.update({"graph": float(gl), **gp})
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(tr.parameters(), 1.0)
        opt.step()
        step += 1
        hard = (soft.detach() >= cfg.threshold).float()
        parts.update({"total": float(total), "open_soft": float(soft.mean()), "open_hard": float(hard.mean())})
        for k, val in parts.items():
            acc.setdefault(k, []).append(val)
        if step % 10 == 0 or step == cfg.steps:
            row = {"step": step, **{k: round(float(np.mean(vs)), 5) for k, vs in acc.items()},
                   "layer_open_hard": [round(x, 3) for x in hard.mean(0).tolist()], "load1": os.getloadavg()[0]}
            curve.append(row)
            acc = {}
            bar.set_postfix(task=f"{row['task']:.3f}", open=f"{row['open_hard']:.2f}")
        bar.update(1)
        if step % cfg.save_every == 0:
            save()
        if time.time() - t0 > cfg.minutes * 60 and step < cfg.steps:
            save()
            bar.close()
            raise TimeoutError(f"actdistill: time budget of {cfg.minutes} min reached at step {step}/{cfg.steps}; "
                               f"training state saved in {state_dir}; rerun the same command to resume")
    bar.close()
    save()
    val = {"student": validate(model, router, frames, cfg.val_frames, cfg.seed, aw),
           "teacher": validate(tm, None, frames, cfg.val_frames, cfg.seed, aw)}
    _log(f"[actdistill] held-out task loss on the inference path: {json.dumps(val)}")
    export(model, router, teacher, cfg, out, {
        "validation": val,
        "teacher_checkpoint_sha256": tid, "data": {"hash": dhash, "source": source, "episodes": len(episodes),
                                                   "frames_cached": len(frames)},
        "stage1": {"key": s1_key, "reused": s1["hit"], "importance": s1["importance"].tolist(),
                   "curve_last": (s1["meta"].get("curve") or [None])[-1]},
        "train": {"steps": step, "wall_s": round(wall_before + time.time() - t0, 1), "threads": cfg.threads,
                  "curve": curve},
    })
    return out


def export(model: ReferenceVLA, router: Router, teacher: Any, cfg: ActDistillConfig, out: Path,
           extra: dict[str, Any]) -> None:
    """The deployed student only: backbone + expert (+ language head) + router; no graph heads or probes."""
    out.mkdir(parents=True, exist_ok=True)
    sd = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    sd.update({f"router.{k}": v.detach().contiguous().clone() for k, v in router.state_dict().items()})
    save_file(sd, str(out / (ARTIFACT + ".tmp")), metadata={"format": "pt"})
    (out / (ARTIFACT + ".tmp")).replace(out / ARTIFACT)
    manifest = {
        "schema_version": 1, "method": "actdistill", "files": {ARTIFACT: ckpt.sha256_file(out / ARTIFACT)},
        "model_config": model.cfg.to_dict(), "config": cfg.to_dict(),
        "router": {"width": model.cfg.width, "n_layers": model.n_layers, "router_dim": cfg.router_dim,
                   "static": cfg.static},
        "tokenizer": {"vocab": teacher.tok.vocab},
        "lang_tokenizer": {"vocab": teacher.lang_tok.vocab} if teacher.lang_tok is not None else None,
        "code": ckpt.code_commit(), **extra,
    }
    (out / (MANIFEST + ".tmp")).write_text(json.dumps(manifest, indent=1))
    (out / (MANIFEST + ".tmp")).replace(out / MANIFEST)


def load_artifact(folder: Path) -> tuple[ReferenceVLA, Router, dict[str, Any]]:
    from methods.reference.model import ModelConfig

    manifest = json.loads((folder / MANIFEST).read_text())
    for name, digest in manifest["files"].items():
        if ckpt.sha256_file(folder / name) != digest:
            raise ckpt.ChecksumError(f"{folder / name} does not match its manifest sha256")
    sd = load_file(str(folder / ARTIFACT))
    model = ReferenceVLA(ModelConfig.from_dict(manifest["model_config"]))
    model.load_state_dict({k[6:]: v for k, v in sd.items() if k.startswith("model.")})
    r = manifest["router"]
    router = Router(r["width"], r["n_layers"], r["router_dim"], static=r["static"])
    router.load_state_dict({k[7:]: v for k, v in sd.items() if k.startswith("router.")})
    return model.eval(), router.eval(), manifest


if __name__ == "__main__":
    from harness.distill_cli import main

    raise SystemExit(main("actdistill", doc=__doc__))
