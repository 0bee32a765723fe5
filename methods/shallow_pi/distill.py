"""Shallow-pi distillation: build a k-block student from the reference teacher and train it.

Student: the teacher's architecture with ``depth = k``; stem, embeddings, heads, normalisation statistics and the
language head are copied; backbone block j and expert block j are copied from the teacher's layer ``layers[j]``.
Loss (per batch of demonstration frames, one shared flow time t and noise per sample):
    w_gt   * || v_s(x_t, t) - (noise - a) ||^2         flow matching on the demonstrations' actions
  + w_kd   * || v_s(x_t, t) - v_T(x_t, t) ||^2         the teacher's velocity at the same point
  + w_attn * mean_j KL(A_T[layers[j]] || A_S[j])       action-query -> prefix attention, paired layers
  + lang_weight * CE(commentary)                        when the teacher has a language head
The demonstrations and batching are the teacher's (methods/reference/train.py, data.py).

Standalone (e.g. in the background, then `make bench` only evaluates):
    python -m methods.shallow_pi.distill --suite mock-v1 [--variant keep6] [--cache-dir .cache]
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from methods.reference import checkpoint as ckpt
from methods.reference.model import ModelConfig, ReferenceVLA, _beta15
from methods.shallow_pi.config import INFERENCE_ONLY, ShallowPiConfig

ROOT = Path(__file__).resolve().parents[2]


def kept_layers(n_teacher: int, k: int, rule: str) -> list[int]:
    """Teacher layer indices the student's blocks are initialised from (and paired with for attention transfer)."""
    if not 1 <= k <= n_teacher:
        raise ValueError(f"keep_blocks must be in [1, {n_teacher}], got {k}")
    if rule == "uniform":
        idx = [int(round(x)) for x in np.linspace(0, n_teacher - 1, k)] if k > 1 else [n_teacher - 1]
    elif rule == "every":
        s = n_teacher // k
        idx = [i * s for i in range(k)]
    else:
        try:
            idx = [int(x) for x in rule.split(",")]
        except ValueError:
            raise ValueError(f"init_layers must be uniform | every | a comma list, got {rule!r}") from None
        if len(idx) != k:
            raise ValueError(f"init_layers lists {len(idx)} layers but keep_blocks = {k}")
    if sorted(set(idx)) != idx or idx[0] < 0 or idx[-1] >= n_teacher:
        raise ValueError(f"kept layers must be increasing and within [0, {n_teacher - 1}]: {idx}")
    return idx


def build_student(teacher: ReferenceVLA, layers: list[int]) -> ReferenceVLA:
    """A ReferenceVLA with len(layers) blocks whose every weight is copied from the teacher."""
    cfg = ModelConfig.from_dict({**teacher.cfg.to_dict(), "depth": len(layers)})
    student = ReferenceVLA(cfg)
    tsd = teacher.state_dict()
    sd = {}
    for key in student.state_dict():
        parts = key.split(".")
        if parts[0] in ("blocks", "expert"):
            parts[1] = str(layers[int(parts[1])])
        sd[key] = tsd[".".join(parts)].detach().clone()
    student.load_state_dict(sd)
    return student


def artifact_key(teacher_manifest: dict[str, Any], config: ShallowPiConfig,
                 data_hash: str | None = None) -> tuple[str, dict[str, Any]]:
    """Cache key of a student: the teacher's weights, the training config and the hash of the demonstrations
    actually used (``data_hash``; default the teacher's, which is what they are when its data is present)."""
    train_fields = {k: v for k, v in config.to_dict().items() if k not in INFERENCE_ONLY}
    ident = {"teacher_sha256": teacher_manifest["files"][ckpt.WEIGHTS],
             "data_hash": data_hash or (teacher_manifest.get("data") or {}).get("hash"),
             "config": train_fields, "method": "shallow_pi", "version": 1}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16], ident


def kl_attention(p_t: torch.Tensor, p_s: torch.Tensor) -> torch.Tensor:
    """KL(p_t || p_s) over the prefix keys, mean over batch, heads and queries (masked keys have p = 0). The maps
    are the action queries' attention to prefix keys only (their attention to the action tokens is left out), so
    each row is renormalised over the prefix keys first."""
    p_t = p_t / p_t.sum(-1, keepdim=True).clamp_min(1e-12)
    p_s = p_s / p_s.sum(-1, keepdim=True).clamp_min(1e-12)
    kl = torch.xlogy(p_t, p_t) - p_t * torch.log(p_s.clamp_min(1e-12))
    return kl.sum(-1).mean()


def _lr(step: int, cfg: ShallowPiConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def distill_losses(student: ReferenceVLA, teacher: ReferenceVLA, layers: list[int], b: dict[str, Any],
                   cfg: ShallowPiConfig, gen: torch.Generator, weights: torch.Tensor | None) -> dict[str, torch.Tensor]:
    emb = (b["images"], b["text"], b["proprio"], b["text_mask"])
    st_s = student.forward_prefix(student.embed_prefix(*emb))
    a = (b["actions"] - student.action_mean) / student.action_std
    n = a.shape[0]
    w = weights if weights is not None else torch.ones(a.shape[-1])
    att_s: dict[int, torch.Tensor] = {}
    need = cfg.w_attn > 0
    if student.cfg.head == "flow":
        noise = torch.randn(a.shape, generator=gen)
        t = 0.001 + 0.999 * _beta15(torch.rand(n, generator=gen))
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * a
        v_s = student.velocity(st_s, x_t, t, need_attn=need, attn_out=att_s if need else None)
        out = {"fm": (((v_s - (noise - a)) ** 2) * w).mean()}
    else:  # regression head (driving's teacher): the head's L1 on the demonstrations, MSE to the teacher's output
        v_s = student.head_output(st_s, n, need_attn=need, attn_out=att_s if need else None)
        out = {"fm": ((v_s - a).abs() * w).mean()}
    if cfg.w_kd > 0 or need:
        with torch.no_grad():
            st_t = teacher.forward_prefix(teacher.embed_prefix(*emb))
            att_t: dict[int, torch.Tensor] = {}
            if student.cfg.head == "flow":
                v_t = teacher.velocity(st_t, x_t, t, need_attn=need, attn_out=att_t if need else None)
            else:
                v_t = teacher.head_output(st_t, n, need_attn=need, attn_out=att_t if need else None)
        out["kd"] = (((v_s - v_t) ** 2) * w).mean()
        if need:
            out["attn"] = torch.stack([kl_attention(att_t[layers[j]], att_s[j]) for j in range(len(layers))]).mean()
    if "lang" in b and student.cfg.lang_head:
        logits = student.lang_logits(st_s, b["lang"][:, :-1])
        out["lang"] = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                        b["lang"][:, 1:].reshape(-1), ignore_index=0)
    out["total"] = (cfg.w_gt * out["fm"] + cfg.w_kd * out.get("kd", torch.zeros(()))
                    + cfg.w_attn * out.get("attn", torch.zeros(())) + cfg.lang_weight * out.get("lang", torch.zeros(())))
    return out


def load_demos(suite: Any, teacher_manifest: dict[str, Any], log: Callable[[str], None]):
    """The demonstrations the teacher was trained on (methods.reference.train.teacher_episodes)."""
    from methods.reference.train import teacher_episodes

    return teacher_episodes(suite, teacher_manifest, log)


@torch.no_grad()
def evaluate_l1(model: ReferenceVLA, batcher: Any, n: int = 128, seed: int = 1234) -> float:
    """L1 of sampled actions (first 4 of the chunk) vs the demonstrations on held-out frames (env units)."""
    model.eval()
    idx = batcher.idx[torch.linspace(0, len(batcher.idx) - 1, min(n, len(batcher.idx))).long()]
    errs = []
    for i in range(0, len(idx), 64):
        b = batcher.batch(idx[i:i + 64], None, augment=False)
        g = torch.Generator().manual_seed(seed + i)
        state = model.forward_prefix(model.embed_prefix(b["images"], b["text"], b["proprio"], b["text_mask"]))
        a = model.sample_actions(state, torch.randn(b["actions"].shape, generator=g))
        errs.append(float((a[:, :4] - b["actions"][:, :4]).abs().mean()))
    return float(np.mean(errs))


def distill(teacher_policy: Any, suite: Any, cache_dir: Path, cfg: ShallowPiConfig, *, progress: bool = True,
            log: Callable[[str], None] | None = None) -> Path:
    """Train (or resume) the student; return the artifact folder (model.safetensors + manifest.json)."""
    from tqdm import tqdm

    from methods.reference.data import FlatDemos, data_hash
    from methods.reference.train import Batcher

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    teacher: ReferenceVLA = teacher_policy.model
    tman = teacher_policy.manifest
    if teacher.cfg.head not in ("flow", "regression"):
        raise ValueError(f"Shallow-pi distils flow (or regression) action heads; the teacher's is {teacher.cfg.head!r}")
    # the key hashes the demonstrations actually loaded: a student distilled on fallback data (the teacher's were
    # absent) is not reused once the teacher's data exists again
    episodes, source, tcfg = load_demos(suite, tman, log)
    dhash = data_hash(episodes)
    teacher_dhash = (tman.get("data") or {}).get("hash")
    key, ident = artifact_key(tman, cfg, dhash)
    folder = Path(cache_dir) / f"{suite.suite_id}-{key}"
    if (folder / ckpt.MANIFEST).exists() and ckpt.read_manifest(folder).get("train", {}).get("complete"):
        return folder
    if teacher_dhash and dhash != teacher_dhash:
        log(f"[shallow_pi] WARNING: demonstrations hash {dhash} differs from the teacher's {teacher_dhash}")
    layers = kept_layers(teacher.n_layers, cfg.keep_blocks, cfg.init_layers)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        mc = teacher.cfg
        val_eps = set((tman.get("data") or {}).get("val_episodes") or [])
        demos = FlatDemos(episodes, list(mc.cameras), mc.image_size, mc.chunk, tcfg.pad if cfg.augment else 0)
        ep_of = demos.episode.numpy()
        train_idx = np.nonzero(~np.isin(ep_of, list(val_eps)))[0]
        val_idx = np.nonzero(np.isin(ep_of, list(val_eps)))[0]
        lang_tok = teacher_policy.lang_tok if mc.lang_head else None
        train_b = Batcher(demos, teacher_policy.tok, lang_tok, mc, train_idx)
        val_b = Batcher(demos, teacher_policy.tok, lang_tok, mc, val_idx if len(val_idx) else train_idx[:256])
        weights = torch.tensor(tcfg.action_weights, dtype=torch.float32) if tcfg.action_weights else None

        torch.manual_seed(cfg.seed)
        teacher = teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        student = build_student(teacher, layers)
        decay = [p for n, p in student.named_parameters() if p.dim() >= 2 and "pos" not in n]
        no_decay = [p for n, p in student.named_parameters() if not (p.dim() >= 2 and "pos" not in n)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
        state_dir = folder / "state"
        step, wall_before, curve = 0, 0.0, []
        meta = ckpt.load_state(state_dir, student, opt)
        if meta is not None:
            step, wall_before, curve = int(meta["step"]), float(meta.get("wall_s", 0.0)), meta.get("curve", [])
            log(f"[shallow_pi] resumed {folder.name} at step {step}/{cfg.steps}")
        log(f"[shallow_pi] {suite.suite_id}: student {cfg.keep_blocks}/{teacher.n_layers} blocks from teacher "
            f"layers {layers}; {len(train_idx)} train / {len(val_idx)} val frames; {cfg.steps} steps of "
            f"{cfg.batch}; {cfg.threads} thread(s); load {os.getloadavg()[0]:.1f}; artifact {folder}")
        t0 = time.time()

        def save_state() -> None:
            ckpt.save_state(state_dir, student, opt, {"step": step, "wall_s": wall_before + time.time() - t0,
                                                      "curve": curve, "key": key})

        student.train()
        bar = tqdm(total=cfg.steps, initial=step, desc=f"shallow_pi keep{cfg.keep_blocks} {suite.suite_id}",
                   disable=not progress, dynamic_ncols=True, mininterval=5, file=sys.stderr)
        log_step = ckpt.StepLog(cfg, curve, bar, t0, save_state, lambda step: (
            f"Shallow-pi distillation reached its {cfg.minutes} min budget at step {step}/{cfg.steps}; the state "
            f"is saved in {state_dir} — rerun to resume"))
        while step < cfg.steps:
            for g in opt.param_groups:
                g["lr"] = _lr(step, cfg)
            b = train_b.sample(step, cfg.batch, cfg.seed) if cfg.augment else \
                train_b.batch(train_b.idx[torch.randint(0, len(train_b.idx), (cfg.batch,),
                                                        generator=torch.Generator().manual_seed(cfg.seed * 7919 + step))],
                              None, augment=False)
            gen = torch.Generator().manual_seed(cfg.seed * 7_777_777 + step)
            ls = distill_losses(student, teacher, layers, b, cfg, gen, weights)
            opt.zero_grad(set_to_none=True)
            ls["total"].backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            step += 1
            log_step(step, ls)
        bar.close()
        save_state()
        student.eval()
        val = {"student_val_l1_first4": evaluate_l1(student, val_b), "teacher_val_l1_first4": evaluate_l1(teacher, val_b)}
        log(f"[shallow_pi] done: {val}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "curve.json").write_text(json.dumps(curve))
        ckpt.export(student, teacher_policy.tok, lang_tok if mc.lang_head else teacher_policy.lang_tok, folder,
                    fp16=False, extra={
                        "method": "shallow_pi", "suite": suite.suite_id, "key": key, "identity": ident,
                        "kept_teacher_layers": layers, "teacher_layers": teacher.n_layers,
                        "teacher_checkpoint": {"sha256": ident["teacher_sha256"], "suite": tman.get("suite"),
                                               "train_step": (tman.get("train") or {}).get("step")},
                        "data": {"hash": dhash, "teacher_data_hash": teacher_dhash, "source": source,
                                 "train_frames": int(len(train_idx)), "val_frames": int(len(val_idx))},
                        "train": {"step": step, "steps": cfg.steps, "complete": True, "config": asdict(cfg),
                                  "wall_s": round(wall_before + time.time() - t0, 1), "threads": cfg.threads,
                                  "last": curve[-1] if curve else None},
                        "validation": val,
                    })
        return folder
    finally:
        torch.set_num_threads(prev_threads)


if __name__ == "__main__":
    from harness.distill_cli import main

    raise SystemExit(main("shallow_pi", doc=__doc__))
