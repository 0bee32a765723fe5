"""LatentVLA training, four stages, each cached/resumable under the artifact folder:

0. latent action model on unlabelled frame pairs of the demonstrations (lam.py; images only);
1. the VLA — initialised from the suite's reference teacher — learns to predict the latent action tokens of the
   next ``latent_tokens`` segments from its prefix (latent pretraining);
2. the VLA is fine-tuned on actions (flow-matching loss) with the latent loss kept at a small weight;
3. knowledge distillation of the VLA into the compact vision(+command) student (methods/rt_vla/student.py:
   output and feature levels plus ground truth; no language level).

    python -m methods.latent_vla.distill --suite driving [--debug]
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from methods.latent_vla.config import LatentVLAConfig
from methods.latent_vla.lam import LAMConfig, LatentActionModel, train_lam, unlabelled_frames
from methods.reference import checkpoint as ckpt
from methods.rt_vla import distill as rt
from methods.rt_vla.config import RTVLAConfig

IGNORE = -100


def latent_labels(lam: LatentActionModel, frames: torch.Tensor, owner: torch.Tensor, k: int, n_tokens: int
                  ) -> torch.Tensor:
    """(N, n_tokens) LAM codes of segments (t+jk, t+(j+1)k); IGNORE where a segment leaves the episode."""
    n = len(frames)
    codes = torch.full((n,), IGNORE, dtype=torch.long)
    valid = torch.arange(max(0, n - k))
    valid = valid[owner[valid] == owner[valid + k]]
    with torch.no_grad():
        for i in range(0, len(valid), 256):
            t = valid[i:i + 256]
            codes[t] = lam.codes_for(frames[t], frames[t + k])
    out = torch.full((n, n_tokens), IGNORE, dtype=torch.long)
    for j in range(n_tokens):
        src = torch.arange(n) + j * k
        ok = (src < n)
        ok[ok.clone()] &= owner[src[ok]] == owner[torch.arange(n)[ok]]
        out[ok, j] = codes[src[ok]]
    return out


class _Teacherlike:
    """What rt_vla's target/student helpers need from a teacher: model, tokenizers, manifest."""

    def __init__(self, model: Any, tok: Any, manifest: dict[str, Any]):
        self.model, self.tok, self.lang_tok, self.manifest = model, tok, None, manifest


def train_vla(teacher_policy: Any, batcher: Any, labels: torch.Tensor, cfg: LatentVLAConfig, folder: Path,
              progress: bool, log: Callable[[str], None]) -> tuple[Any, torch.nn.Module, list[dict]]:
    from tqdm import tqdm

    from methods.reference.model import ReferenceVLA

    mc = teacher_policy.model.cfg
    vla = ReferenceVLA(mc)
    vla.load_state_dict(teacher_policy.model.state_dict())
    head = torch.nn.Linear(2 * mc.width, cfg.latent_tokens * cfg.lam_codes)
    holder = torch.nn.ModuleDict({"vla": vla, "head": head})
    opt = torch.optim.AdamW(holder.parameters(), lr=cfg.vla_lr, weight_decay=0.01)
    state_dir = folder / "vla_state"
    meta = ckpt.load_state(state_dir, holder, opt)
    step, curve = (int(meta["step"]), meta.get("curve", [])) if meta else (0, [])
    total = cfg.latent_steps + cfg.action_steps
    bar = tqdm(total=total, initial=step, desc="latent_vla VLA", disable=not progress, file=sys.stderr, mininterval=5)
    vla.train()
    t0 = time.time()
    while step < total:
        stage = "latent" if step < cfg.latent_steps else "action"
        b = batcher.sample(step, cfg.vla_batch, cfg.seed + 17)
        sel = batcher.last_sel
        state = vla.forward_prefix(vla.embed_prefix(b["images"], b["text"], b["proprio"], b["text_mask"]))
        pooled = torch.cat([state.x.mean(1), state.x.amax(1)], dim=-1)
        logits = head(pooled).view(-1, cfg.latent_tokens, cfg.lam_codes)
        lat = F.cross_entropy(logits.reshape(-1, cfg.lam_codes), labels[sel].reshape(-1), ignore_index=IGNORE)
        loss = lat if stage == "latent" else vla.action_loss(state, b["actions"]) + cfg.latent_weight_finetune * lat
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(holder.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 10 == 0 or step == total:
            curve.append({"step": step, "stage": stage, "loss": round(float(loss), 5), "latent_ce": round(float(lat), 5)})
            bar.set_postfix(curve[-1])
        bar.update(1)
        if step % 100 == 0 and step < total:
            ckpt.save_state(state_dir, holder, opt, {"step": step, "curve": curve})
        if cfg.minutes > 0 and time.time() - t0 > cfg.minutes * 60 and step < total:
            ckpt.save_state(state_dir, holder, opt, {"step": step, "curve": curve})
            raise TimeoutError(f"latent_vla VLA stage reached its {cfg.minutes} min budget at step {step}/{total}; "
                               f"rerun to resume from {state_dir}")
    bar.close()
    ckpt.save_state(state_dir, holder, opt, {"step": step, "curve": curve})
    return vla.eval(), head.eval(), curve


def distill(teacher_policy: Any, suite: Any, cache_dir: Path, cfg: LatentVLAConfig, *, progress: bool = True,
            log: Callable[[str], None] | None = None) -> Path:
    from methods.reference.data import FlatDemos, data_hash
    from methods.reference.train import Batcher

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    tman = teacher_policy.manifest
    key, ident = rt.artifact_key(tman, cfg, {"method": "latent_vla"})
    folder = Path(cache_dir) / f"{suite.suite_id}-{key}"
    if (folder / ckpt.MANIFEST).exists() and json.loads((folder / ckpt.MANIFEST).read_text()).get("complete"):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        episodes, source, tcfg = rt.load_teacher_demos(suite, tman, log)
        dhash = data_hash(episodes)
        mc = teacher_policy.model.cfg
        # ----- stage 0: latent action model on images only -----
        frames, owner = unlabelled_frames(episodes, mc.cameras[0])
        lcfg = LAMConfig(image_size=64, k=cfg.lam_k, latent_dim=cfg.lam_latent_dim, codes=cfg.lam_codes,
                         steps=cfg.lam_steps, batch=cfg.lam_batch, seed=cfg.seed)
        # the LAM depends only on its own config and the frames: cached apart from the artifact, so a change of
        # the VLA or student stages does not retrain it
        lam_key = hashlib.sha256(json.dumps({"lam": asdict(lcfg), "data": dhash, "camera": mc.cameras[0]},
                                            sort_keys=True).encode()).hexdigest()[:12]
        lam_dir = Path(cache_dir) / f"lam-{suite.suite_id}-{lam_key}"
        lam_dir.mkdir(parents=True, exist_ok=True)
        lam_file, lam_report_file = lam_dir / "lam.safetensors", lam_dir / "lam_report.json"
        lam = LatentActionModel(lcfg)
        if lam_file.exists() and lam_report_file.exists():
            lam.load_state_dict(load_file(str(lam_file)))
            lam_report = json.loads(lam_report_file.read_text())
        else:
            lam, lam_report = train_lam(frames, owner, lcfg, progress=progress, log=log)
            save_file({k: v.contiguous() for k, v in lam.state_dict().items()}, str(lam_file))
            lam_report_file.write_text(json.dumps(lam_report, indent=1))
        labels = latent_labels(lam.eval(), frames, owner, cfg.lam_k, cfg.latent_tokens)
        # ----- stages 1-2: the VLA -----
        demos = FlatDemos(episodes, list(mc.cameras), mc.image_size, mc.chunk, tcfg.pad)
        ep_of = demos.episode.numpy()
        val_eps = set((tman.get("data") or {}).get("val_episodes") or [])
        in_val = np.isin(ep_of, list(val_eps)) if val_eps else (ep_of % 20 == 19)
        train_all = np.nonzero(~in_val)[0]
        tb_full = _RecordingBatcher(demos, teacher_policy.tok, None, mc, train_all)
        vla_dir = folder / "vla"
        if (vla_dir / ckpt.MANIFEST).exists():
            from methods.reference.checkpoint import load as load_ref

            vla, _, _, vla_manifest = load_ref(vla_dir)
            vla_curve = json.loads((folder / "vla_curve.json").read_text())
        else:
            vla, head, vla_curve = train_vla(teacher_policy, tb_full, labels, cfg, folder, progress, log)
            (folder / "vla_curve.json").write_text(json.dumps(vla_curve))
            ckpt.export(vla, teacher_policy.tok, None, vla_dir, fp16=False, extra={
                "method": "latent_vla (stage 1-2 VLA)", "suite": suite.suite_id, "data": {"hash": dhash},
                "initialised_from": ident["teacher_sha256"]})
            save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(folder / "latent_head.safetensors"))
            vla_manifest = ckpt.read_manifest(vla_dir)
        vla_like = _Teacherlike(vla.eval(), teacher_policy.tok, vla_manifest)
        # ----- stage 3: distillation into the compact student -----
        rcfg = RTVLAConfig(width=cfg.width, channels=list(cfg.channels), grid=cfg.grid, fuse_layers=cfg.fuse_layers,
                           w_output=cfg.w_output, w_gt=cfg.w_gt, w_feature=cfg.w_feature, w_language=0.0,
                           steps=cfg.steps, batch=cfg.batch, lr=cfg.lr, frame_stride=cfg.frame_stride,
                           max_frames=cfg.max_frames, threads=cfg.threads, minutes=cfg.minutes, seed=cfg.seed)
        train_idx = rt.spread(train_all[:: cfg.frame_stride], cfg.max_frames)
        val_idx = np.nonzero(in_val)[0][:: cfg.frame_stride][:512]
        tb = Batcher(demos, teacher_policy.tok, None, mc, train_idx)
        vb = Batcher(demos, teacher_policy.tok, None, mc, val_idx if len(val_idx) else train_idx[:256])
        targets = rt.teacher_targets(vla_like, tb, tb.idx, folder / "targets.safetensors", progress, log)
        vtargets = rt.teacher_targets(vla_like, vb, vb.idx, folder / "targets-val.safetensors", progress, log)
        student, curve, step, wall = rt.train_student(vla_like, tb, targets, rcfg, folder / "state", key,
                                                      f"latent_vla {suite.suite_id}", progress, log)
        val = rt.evaluate(student, vla_like, vb, vtargets)
        log(f"[latent_vla] done: {val}")
        rt.export(student, folder, {
            "method": "latent_vla", "suite": suite.suite_id, "key": key, "identity": ident, "complete": True,
            "student_config": student.cfg.to_dict(), "config": asdict(cfg),
            "tokenizer": {"vocab": teacher_policy.tok.vocab}, "lang_tokenizer": None,
            "teacher": {"sha256": ident["teacher_sha256"], "suite": tman.get("suite")},
            "data": {"hash": dhash, "source": source, "train_frames": int(len(train_idx))},
            "lam": {k: v for k, v in lam_report.items() if k != "curve"}, "lam_curve": lam_report.get("curve"),
            "vla": {"curve": vla_curve, "folder": "vla/"},
            "train": {"step": step, "wall_s": wall, "threads": cfg.threads, "curve": curve},
            "validation": val, "code": ckpt.code_commit(),
        })
        return folder
    finally:
        torch.set_num_threads(prev)


class _RecordingBatcher:
    """reference.train.Batcher that remembers the frame indices of its last sample (for latent labels)."""

    def __new__(cls, *args: Any, **kw: Any):
        from methods.reference.train import Batcher

        class Recording(Batcher):
            def sample(self, step: int, batch: int, seed: int) -> dict[str, Any]:
                gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
                sel = self.idx[torch.randint(0, len(self.idx), (batch,), generator=gen)]
                self.last_sel = sel
                return self.batch(sel, gen, augment=True)

        return Recording(*args, **kw)


if __name__ == "__main__":
    from harness.distill_cli import main

    raise SystemExit(main("latent_vla", doc=__doc__))
