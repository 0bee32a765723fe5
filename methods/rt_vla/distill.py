"""RT-VLA distillation: (1) run the teacher once over the demonstration frames and cache its outputs at three
levels — action chunks, pooled prefix features, generated commentary tokens; (2) train the compact student on
them (plus the expert's ground-truth chunks). The artifact (student safetensors + manifest) is cached by the
hash of (teacher checkpoint, demonstrations, config); training state is saved for resumption.

    python -m methods.rt_vla.distill --suite driving [--debug]
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from methods.reference import checkpoint as ckpt
from methods.rt_vla.config import RTVLAConfig
from methods.rt_vla.student import BOS, EOS, PAD, CompactStudent, StudentConfig, token_metrics

ROOT = Path(__file__).resolve().parents[2]
ARTIFACT_VERSION = 2  # 2: frames spread over all episodes (1 took the first max_frames)


def artifact_key(teacher_manifest: dict[str, Any], cfg: RTVLAConfig, extra: dict | None = None) -> tuple[str, dict]:
    ident = {"version": ARTIFACT_VERSION, "teacher_sha256": teacher_manifest["files"][ckpt.WEIGHTS],
             "data_hash": (teacher_manifest.get("data") or {}).get("hash"), "config": cfg.artifact_identity(),
             **(extra or {})}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12], ident


def spread(idx: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` of ``idx``, evenly spaced over all of it (every episode and task, not the first n frames)."""
    if len(idx) <= n:
        return idx
    return idx[np.unique(np.linspace(0, len(idx) - 1, n).round().astype(np.int64))]


def load_teacher_demos(suite: Any, teacher_manifest: dict[str, Any], log: Callable[[str], None]):
    """The demonstrations the teacher was trained on (methods.reference.train.teacher_episodes)."""
    from methods.reference.train import teacher_episodes

    return teacher_episodes(suite, teacher_manifest, log)


@torch.no_grad()
def teacher_targets(teacher_policy: Any, batcher: Any, idx: torch.Tensor, cache: Path, progress: bool,
                    log: Callable[[str], None]) -> dict[str, torch.Tensor]:
    """Teacher actions (B, chunk, A), pooled prefix features (B, 2·width) and commentary ids (B, L) for frames
    ``idx`` — computed once and cached as safetensors."""
    if cache.exists():
        return load_file(str(cache))
    from tqdm import tqdm

    model = teacher_policy.model.eval()
    mc = model.cfg
    acts, feats, langs = [], [], []
    bar = tqdm(total=len(idx), desc="rt_vla teacher targets", disable=not progress, file=sys.stderr, mininterval=5)
    for i in range(0, len(idx), 128):
        sel = idx[i:i + 128]
        b = batcher.batch(sel, None, augment=False)
        state = model.forward_prefix(model.embed_prefix(b["images"], b["text"], b["proprio"], b["text_mask"]))
        g = torch.Generator().manual_seed(int(sel[0]))
        noise = torch.randn(len(sel), mc.chunk, mc.action_dim, generator=g)
        acts.append(model.sample_actions(state, noise))
        feats.append(torch.cat([state.x.mean(1), state.x.amax(1)], dim=-1))
        if mc.lang_head and getattr(teacher_policy, "lang_tok", None) is not None:
            ids = model.generate_text(state)
            seq = torch.full((len(sel), mc.lang_max_len + 2), PAD, dtype=torch.long)
            for j, s in enumerate(ids):
                s = [BOS] + (s[: s.index(EOS) + 1] if EOS in s else s + [EOS])
                seq[j, : len(s)] = torch.tensor(s[: mc.lang_max_len + 2])
            langs.append(seq)
        bar.update(len(sel))
    bar.close()
    out = {"idx": idx.clone(), "actions": torch.cat(acts).contiguous(), "features": torch.cat(feats).contiguous()}
    if langs:
        out["lang"] = torch.cat(langs).contiguous()
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(cache))
    log(f"[rt_vla] cached teacher targets for {len(idx)} frames -> {cache}")
    return out


def build_student(teacher_policy: Any, cfg: RTVLAConfig) -> CompactStudent:
    mc = teacher_policy.model.cfg
    lang_tok = teacher_policy.lang_tok
    scfg = StudentConfig(cameras=list(mc.cameras), image_size=mc.image_size, channels=list(cfg.channels),
                         grid=cfg.grid, width=cfg.width, fuse_layers=cfg.fuse_layers, proprio_dim=mc.proprio_dim,
                         action_dim=mc.action_dim, chunk=mc.chunk, vocab_size=len(teacher_policy.tok),
                         lang_head=bool(mc.lang_head and lang_tok is not None),
                         lang_vocab_size=len(lang_tok) if lang_tok is not None else 64, lang_layers=cfg.lang_layers,
                         lang_max_len=mc.lang_max_len)
    student = CompactStudent(scfg)
    t = teacher_policy.model
    for name in ("proprio_mean", "proprio_std", "action_mean", "action_std"):
        getattr(student, name).copy_(getattr(t, name))
    return student


def train_student(teacher_policy: Any, tb: Any, targets: dict[str, torch.Tensor], cfg: RTVLAConfig, state_dir: Path,
                  key: str, desc: str, progress: bool, log: Callable[[str], None]
                  ) -> tuple[CompactStudent, list[dict], int, float]:
    """Multi-level distillation of the compact student on cached teacher targets (resumable from state_dir)."""
    from tqdm import tqdm

    pos_of = {int(i): j for j, i in enumerate(targets["idx"].tolist())}
    torch.manual_seed(cfg.seed)
    student = build_student(teacher_policy, cfg)
    proj = torch.nn.Linear(2 * cfg.width, targets["features"].shape[1])  # training-only feature adapter
    params = list(student.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    holder = torch.nn.ModuleDict({"student": student, "proj": proj})
    step, curve, wall_before = 0, [], 0.0
    meta = ckpt.load_state(state_dir, holder, opt)
    if meta is not None:
        step, curve, wall_before = int(meta["step"]), meta.get("curve", []), float(meta.get("wall_s", 0))
        log(f"[{desc}] resumed at step {step}/{cfg.steps}")
    feat_mu = targets["features"].mean(0)
    feat_sd = targets["features"].std(0).clamp(min=1e-3)
    a_mean, a_std = student.action_mean, student.action_std
    log(f"[{desc}] {len(tb.idx)} train frames; student {sum(p.numel() for p in student.parameters())} params; "
        f"{cfg.steps} steps; load {os.getloadavg()[0]:.1f}")
    t0 = time.time()

    def save_state() -> None:
        ckpt.save_state(state_dir, holder, opt, {"step": step, "curve": curve, "key": key,
                                                 "wall_s": wall_before + time.time() - t0})

    student.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not progress,
               file=sys.stderr, mininterval=5, dynamic_ncols=True)
    log_step = ckpt.StepLog(cfg, curve, bar, t0, save_state, lambda step: (
        f"{desc}: distillation reached its {cfg.minutes} min budget at step {step}/{cfg.steps}; state saved in "
        f"{state_dir}: rerun to resume"))
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / cfg.steps)))
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        sel = tb.idx[torch.randint(0, len(tb.idx), (cfg.batch,), generator=gen)]
        b = tb.batch(sel, gen, augment=cfg.augment)
        rows = torch.tensor([pos_of[int(i)] for i in sel])
        tokens = student.encode(b["images"], b["text"], b["proprio"])
        pred = student.normalised_actions(tokens)
        ls = {"output": F.l1_loss(pred, (targets["actions"][rows] - a_mean) / a_std),
              "gt": F.l1_loss(pred, (b["actions"] - a_mean) / a_std),
              "feature": F.mse_loss(proj(student.pooled(tokens)), (targets["features"][rows] - feat_mu) / feat_sd)}
        total = cfg.w_output * ls["output"] + cfg.w_gt * ls["gt"] + cfg.w_feature * ls["feature"]
        if student.cfg.lang_head and "lang" in targets:
            seq = targets["lang"][rows]
            logits = student.lang_logits(tokens, seq[:, :-1])
            ls["language"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seq[:, 1:].reshape(-1),
                                             ignore_index=PAD)
            total = total + cfg.w_language * ls["language"]
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        log_step(step, {**ls, "total": total})
    bar.close()
    save_state()
    student.eval()
    return student, curve, step, round(wall_before + time.time() - t0, 1)


def distill(teacher_policy: Any, suite: Any, cache_dir: Path, cfg: RTVLAConfig, *, progress: bool = True,
            log: Callable[[str], None] | None = None) -> Path:
    """Train (or resume, or just find) the student; return the artifact folder."""
    from methods.reference.data import FlatDemos, data_hash
    from methods.reference.train import Batcher

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    tman = teacher_policy.manifest
    key, ident = artifact_key(tman, cfg)
    folder = Path(cache_dir) / f"{suite.suite_id}-{key}"
    if (folder / ckpt.MANIFEST).exists() and json.loads((folder / ckpt.MANIFEST).read_text()).get("complete"):
        return folder
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        episodes, source, tcfg = load_teacher_demos(suite, tman, log)
        dhash = data_hash(episodes)
        mc = teacher_policy.model.cfg
        demos = FlatDemos(episodes, list(mc.cameras), mc.image_size, mc.chunk, tcfg.pad if cfg.augment else 0)
        val_eps = set((tman.get("data") or {}).get("val_episodes") or [])
        ep_of = demos.episode.numpy()
        in_val = np.isin(ep_of, list(val_eps)) if val_eps else (ep_of % 20 == 19)
        train_idx = spread(np.nonzero(~in_val)[0][:: cfg.frame_stride], cfg.max_frames)
        val_idx = np.nonzero(in_val)[0][:: max(1, cfg.frame_stride)][:512]
        lang_tok = teacher_policy.lang_tok if mc.lang_head else None
        tb = Batcher(demos, teacher_policy.tok, lang_tok, mc, train_idx)
        vb = Batcher(demos, teacher_policy.tok, lang_tok, mc, val_idx if len(val_idx) else train_idx[:256])
        tkey = hashlib.sha256(f"{ident['teacher_sha256']}-{dhash}-{cfg.frame_stride}-{cfg.max_frames}-v{ARTIFACT_VERSION}".encode()).hexdigest()[:12]
        targets = teacher_targets(teacher_policy, tb, tb.idx, Path(cache_dir) / f"targets-{suite.suite_id}-{tkey}.safetensors",
                                  progress, log)
        vtargets = teacher_targets(teacher_policy, vb, vb.idx,
                                   Path(cache_dir) / f"targets-val-{suite.suite_id}-{tkey}.safetensors", progress, log)
        student, curve, step, wall = train_student(teacher_policy, tb, targets, cfg, folder / "state", key,
                                                   f"rt_vla {suite.suite_id}", progress, log)
        student.eval()
        val = evaluate(student, teacher_policy, vb, vtargets)
        log(f"[rt_vla] done: {val}")
        export(student, folder, {
            "method": "rt_vla", "suite": suite.suite_id, "key": key, "identity": ident, "complete": True,
            "student_config": student.cfg.to_dict(), "config": asdict(cfg),
            "tokenizer": {"vocab": teacher_policy.tok.vocab},
            "lang_tokenizer": {"vocab": lang_tok.vocab} if lang_tok is not None else None,
            "teacher": {"sha256": ident["teacher_sha256"], "suite": tman.get("suite"),
                        "params": tman.get("params")},
            "data": {"hash": dhash, "source": source, "train_frames": int(len(train_idx)),
                     "val_frames": int(len(val_idx))},
            "train": {"step": step, "wall_s": wall, "threads": cfg.threads, "curve": curve},
            "validation": val, "code": ckpt.code_commit(),
        })
        return folder
    finally:
        torch.set_num_threads(prev_threads)


@torch.no_grad()
def evaluate(student: CompactStudent, teacher_policy: Any, vb: Any, vt: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Held-out frames: L1 of the first 4 actions vs the expert and vs the teacher; commentary quality of the
    student vs the teacher's commentary (and vs the expert's) — token accuracy, exact match, ROUGE-L F1."""
    out: dict[str, Any] = {}
    l1_gt, l1_t, preds, refs_t, refs_x = [], [], [], [], []
    idx = vt["idx"]
    for i in range(0, len(idx), 64):
        sel = idx[i:i + 64]
        b = vb.batch(sel, None, augment=False)
        tokens = student.encode(b["images"], b["text"], b["proprio"])
        a = student.actions(tokens)
        l1_gt.append(float((a[:, :4] - b["actions"][:, :4]).abs().mean()))
        l1_t.append(float((a[:, :4] - vt["actions"][i:i + 64, :4]).abs().mean()))
        if student.cfg.lang_head and "lang" in vt:
            preds += student.generate(tokens)
            refs_t += [s[1:].tolist() for s in vt["lang"][i:i + 64]]
            if "lang" in b:
                refs_x += [s[1:].tolist() for s in b["lang"]]
    out["student_val_l1_first4_vs_expert"] = float(np.mean(l1_gt))
    out["student_val_l1_first4_vs_teacher"] = float(np.mean(l1_t))
    if preds:
        out["language_vs_teacher"] = token_metrics(preds, refs_t)
        if refs_x:
            out["language_vs_expert"] = token_metrics(preds, refs_x)
            out["teacher_language_vs_expert"] = token_metrics(refs_t, refs_x)
    return out


def export(student: CompactStudent, folder: Path, manifest: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().contiguous().clone() for k, v in student.state_dict().items()}
    tmp = folder / (ckpt.WEIGHTS + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / ckpt.WEIGHTS)
    manifest = {**manifest, "files": {ckpt.WEIGHTS: ckpt.sha256_file(folder / ckpt.WEIGHTS)}}
    (folder / ckpt.MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))


def load(folder: Path) -> tuple[CompactStudent, dict[str, Any]]:
    """Load a student artifact; verifies sha256, never unpickles."""
    manifest = json.loads((Path(folder) / ckpt.MANIFEST).read_text())
    for name, sha in manifest["files"].items():
        got = ckpt.sha256_file(Path(folder) / name)
        if got != sha:
            raise ckpt.ChecksumError(f"{folder}/{name}: sha256 {got} != manifest {sha}")
    student = CompactStudent(StudentConfig(**manifest["student_config"]))
    student.load_state_dict(load_file(str(Path(folder) / ckpt.WEIGHTS)))
    return student.eval(), manifest


if __name__ == "__main__":
    from harness.distill_cli import main

    raise SystemExit(main("rt_vla", doc=__doc__))
