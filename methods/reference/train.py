"""Behaviour cloning of the reference teacher on a suite's expert demonstrations (`make teacher SUITE=...`).

Resumable: the training state (weights, AdamW moments, step) is saved under .cache/reference/<suite>/ every
``save_every`` steps and when the time budget ends; rerunning the same command continues where it stopped.
The exported checkpoint (fp16 safetensors + manifest.json + curve.json) goes to
methods/reference/checkpoints/<suite>[@head]/ at every save.

    python -m methods.reference.train --suite mock-v1 [--head flow] [--minutes 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from harness.interfaces import parse_value
from methods.reference import checkpoint as ckpt
from methods.reference.data import (FlatDemos, collect_expert_episodes, data_hash, episodes_from_suite,
                                    load_episodes, save_episodes)
from methods.reference.model import PAD, ModelConfig, ReferenceVLA, WordTokenizer

ROOT = Path(__file__).resolve().parents[2]
PRESETS = Path(__file__).resolve().parent / "configs" / "train.yaml"


@dataclass
class TrainConfig:
    model: dict[str, Any] = field(default_factory=dict)
    steps: int = 3000  # total optimizer steps (the cosine schedule spans them)
    batch: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int = 200
    pad: int = 4  # random-shift augmentation: pixels of edge padding
    minutes: float = 60.0  # wall-clock budget of one invocation (resume continues)
    save_every: int = 250
    eval_every: int = 500
    val_fraction: float = 0.05
    seed: int = 0
    demos_per_task: int = 50  # only for suites without recorded demos (collected here with the expert)
    dart_noise: float = 0.0
    lang_weight: float = 0.3
    action_weights: list[float] | None = None
    flow_samples: int = 1  # (noise, t) draws per sample for the flow loss (the expert is cheap next to the backbone)


def preset_for(suite_id: str) -> dict[str, Any]:
    """The preset with the longest key that prefixes ``suite_id`` (an exact key is the longest)."""
    presets = yaml.safe_load(PRESETS.read_text())
    key = max((k for k in presets if suite_id.startswith(k)), key=len, default=None)
    if key is not None:
        return dict(presets[key])
    raise SystemExit(f"no training preset for {suite_id!r} in {PRESETS}; known prefixes: {sorted(presets)}")


def _suite_episodes(suite, cache: Path, cfg: TrainConfig, log):
    try:
        eps = episodes_from_suite(suite)
        log(f"[teacher] {len(eps)} demonstration episodes from {suite.suite_id}.demonstrations()")
        return eps, "suite.demonstrations()"
    except (NotImplementedError, ImportError, FileNotFoundError) as e:
        log(f"[teacher] {suite.suite_id}.demonstrations() unavailable ({type(e).__name__}: {e})")
        return None


def _part_files(cache: Path) -> list[Path]:
    """demos_part<k>.npz in k order (part10 after part9)."""
    def k(p: Path) -> int:
        digits = p.stem[len("demos_part"):]
        return int(digits) if digits.isdigit() else 1 << 30
    return sorted(cache.glob("demos_part*.npz"), key=lambda p: (k(p), p.name))


def _load_parts(cache: Path) -> list[tuple[list, str]]:
    """Every part file's episodes with a one-line description (DAgger parts carry a sidecar JSON: which
    checkpoint drove, beta, counts)."""
    out = []
    for p in _part_files(cache):
        got = load_episodes(p)
        side = p.with_suffix(".json")
        info = json.loads(side.read_text()) if side.exists() else {"kind": "expert"}
        out.append((got, f"{p.name}: {len(got)} " + (
            f"DAgger episodes (driven by {info['checkpoint']}, beta {info['beta']}, labelled by the expert; "
            f"policy success {info['stats']['policy_successes']}/{info['stats']['episodes']})"
            if info.get("kind") == "dagger" else "expert roll-outs")))
    return out


def _join_parts(parts: list[tuple[list, str]], cache: Path, log) -> tuple[list, str]:
    eps = [e for got, _ in parts for e in got]
    kinds = "; ".join(k for _, k in parts)
    log(f"[teacher] {len(eps)} episodes from {len(parts)} part files in {cache}: {kinds}")
    return eps, f"training seeds only (python -m methods.reference.data): {kinds}"


def _collected_episodes(suite, cache: Path, cfg: TrainConfig, log, collect: bool):
    parts = _load_parts(cache)
    if parts:
        return _join_parts(parts, cache, log)
    path = cache / "demos.npz"
    if path.exists():
        eps = load_episodes(path)
        log(f"[teacher] {len(eps)} expert episodes from {path}")
        return eps, "expert roll-outs from training seeds (methods/reference/data.py)"
    if not collect:
        return None
    log(f"[teacher] {suite.suite_id} has no recorded demos: rolling out its expert from training seeds")
    eps = collect_expert_episodes(suite, cfg.demos_per_task, dart_noise=cfg.dart_noise)
    save_episodes(eps, path)
    return eps, "expert roll-outs from training seeds (methods/reference/data.py)"


def get_episodes(suite, cfg: TrainConfig, cache: Path, log, source: str = "auto", want_hash: str | None = None):
    """``source``: suite (Suite.demonstrations()), collected (roll-outs made here) or auto: the one a saved
    training state was made from (``want_hash``), else the suite's demos, else roll-outs (collected if absent)."""
    if source == "suite":
        got = _suite_episodes(suite, cache, cfg, log)
        if got is None:
            raise SystemExit(f"{suite.suite_id} has no demonstrations; run `make demos SUITE={suite.suite_id}`")
        return got
    if source == "collected":
        return _collected_episodes(suite, cache, cfg, log, collect=True)
    if source == "all":  # the suite's recorded demos + every part file (e.g. DAgger rounds on top of LIBERO demos)
        got = _suite_episodes(suite, cache, cfg, log)
        if got is None:
            raise SystemExit(f"{suite.suite_id} has no demonstrations; run `make demos SUITE={suite.suite_id}`")
        more = _collected_episodes(suite, cache, cfg, log, collect=False)
        return (got[0] + more[0], f"{got[1]} + {more[1]}") if more else got
    first = None
    for get in (lambda: _suite_episodes(suite, cache, cfg, log),
                lambda: _collected_episodes(suite, cache, cfg, log, collect=False)):
        got = get()
        if got is None:
            continue
        if want_hash is None or data_hash(got[0]) == want_hash:
            return got
        log(f"[teacher] not the data of the saved state (hash {want_hash}); trying the next source")
        first = first or got
    return first or _collected_episodes(suite, cache, cfg, log, collect=True)


def teacher_episodes(suite, teacher_manifest: dict[str, Any], log, cache: Path | None = None
                     ) -> tuple[list, str, TrainConfig]:
    """The demonstrations a reference teacher was trained on (matched by the data hash in its manifest), for
    distillers. Tries the suite's demos, the part files in .cache/reference/<suite>/ and both together. When none
    matches (e.g. a fresh clone has no DAgger parts), falls back to the first available source, says so loudly and
    marks ``source`` with "NOT the teacher's data" (it ends up in every artifact manifest)."""
    names = set(TrainConfig.__dataclass_fields__)
    tcfg = TrainConfig(**{k: v for k, v in ((teacher_manifest.get("train") or {}).get("config") or {}).items()
                          if k in names})
    want = (teacher_manifest.get("data") or {}).get("hash")
    cache = cache or ROOT / ".cache" / "reference" / suite.suite_id
    suite_got = _suite_episodes(suite, cache, tcfg, log)
    parts = _load_parts(cache)  # read once; prefixes are joined from memory
    seen, cands = [], []

    def candidates():
        if suite_got:
            yield suite_got
        if not parts:  # a single roll-out file (demos.npz), if any
            got = _collected_episodes(suite, cache, tcfg, log, collect=False)
            if got:
                yield got
        # part files added after the teacher was trained (a later DAgger round) are left out: try every prefix
        for k in range(len(parts), 0, -1):
            got = _join_parts(parts[:k], cache, log)
            yield got
            if suite_got:
                yield suite_got[0] + got[0], f"{suite_got[1]} + {got[1]}"

    for eps, src in candidates():
        cands.append((eps, src))
        h = data_hash(eps)
        if want is None or h == want:
            return eps, src, tcfg
        seen.append(f"{src[:80]} (hash {h})")
    if not cands:  # nothing recorded yet: roll the expert out from training seeds (cached)
        eps, src = _collected_episodes(suite, cache, tcfg, log, collect=True)
        return eps, f"{src} -- NOT the teacher's data (hash {want})", tcfg
    eps, src = cands[0]
    log(f"[data] WARNING: no data source of {suite.suite_id} matches the teacher's data hash {want}; tried "
        f"{'; '.join(seen)}. Distilling on {src} instead: results are not comparable to a student of the same "
        f"teacher distilled on its own data (rebuild that data as methods/reference/README.md says).")
    return eps, f"{src} -- NOT the teacher's data (hash {want})", tcfg


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


class Batcher:
    def __init__(self, demos: FlatDemos, tok: WordTokenizer, lang_tok: WordTokenizer | None, mcfg: ModelConfig,
                 idx: np.ndarray):
        self.d, self.idx, self.mcfg = demos, torch.from_numpy(idx), mcfg
        self.text = [tok.encode(s, mcfg.max_text_len) or [1] for s in demos.instructions]
        self.lang_tok = lang_tok
        self._lang_cache: dict[str, list[int]] = {}

    def lang_ids(self, s: str) -> list[int]:
        if s not in self._lang_cache:
            self._lang_cache[s] = self.lang_tok.encode(s, self.mcfg.lang_max_len, bos=True, eos=True)
        return self._lang_cache[s]

    def batch(self, sel: torch.Tensor, gen: torch.Generator | None, augment: bool) -> dict[str, Any]:
        d = self.d
        ep = d.episode[sel]
        texts = [self.text[int(e)] for e in ep]
        t = max(len(x) for x in texts)
        text = torch.full((len(sel), t), PAD, dtype=torch.long)
        for i, x in enumerate(texts):
            text[i, :len(x)] = torch.tensor(x)
        out = {"images": d.images_at(sel, gen, augment), "text": text, "text_mask": text != PAD,
               "proprio": d.proprio[sel], "actions": d.action_chunks(sel)}
        if self.lang_tok is not None:
            seqs = [self.lang_ids(d.commentary[int(i)]) for i in sel]
            n = max(len(s) for s in seqs)
            lang = torch.full((len(sel), n), PAD, dtype=torch.long)
            for i, s in enumerate(seqs):
                lang[i, :len(s)] = torch.tensor(s)
            out["lang"] = lang
        return out

    def sample(self, step: int, batch: int, seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        sel = self.idx[torch.randint(0, len(self.idx), (batch,), generator=gen)]
        return self.batch(sel, gen, augment=True)


def losses(model: ReferenceVLA, b: dict[str, Any], cfg: TrainConfig, gen: torch.Generator | None = None
           ) -> dict[str, torch.Tensor]:
    state = model.forward_prefix(model.embed_prefix(b["images"], b["text"], b["proprio"], b["text_mask"]))
    w = torch.tensor(cfg.action_weights) if cfg.action_weights else None
    out = {"action": model.action_loss(state, b["actions"], generator=gen, weights=w, flow_samples=cfg.flow_samples)}
    if "lang" in b:
        logits = model.lang_logits(state, b["lang"][:, :-1])
        out["lang"] = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                        b["lang"][:, 1:].reshape(-1), ignore_index=PAD)
    out["total"] = out["action"] + cfg.lang_weight * out.get("lang", torch.zeros(()))
    return out


@torch.no_grad()
def evaluate(model: ReferenceVLA, batcher: Batcher, cfg: TrainConfig, n: int = 256) -> dict[str, float]:
    """Held-out episodes: loss, and L1 of sampled (first-4) actions vs the expert's, in action units."""
    model.eval()
    idx = batcher.idx[torch.linspace(0, len(batcher.idx) - 1, min(n, len(batcher.idx))).long()]
    res: dict[str, list[float]] = {"val_loss": [], "val_l1_first4": [], "val_lang_loss": []}
    for i in range(0, len(idx), 64):
        b = batcher.batch(idx[i:i + 64], None, augment=False)
        g = torch.Generator().manual_seed(1234 + i)
        ls = losses(model, b, cfg, g)
        res["val_loss"].append(float(ls["action"]))
        if "lang" in ls:
            res["val_lang_loss"].append(float(ls["lang"]))
        state = model.forward_prefix(model.embed_prefix(b["images"], b["text"], b["proprio"], b["text_mask"]))
        noise = torch.randn(b["actions"].shape, generator=g)
        a = model.sample_actions(state, noise)
        res["val_l1_first4"].append(float((a[:, :4] - b["actions"][:, :4]).abs().mean()))
    model.train()
    return {k: float(np.mean(v)) for k, v in res.items() if v}


def _source_vocabs(src: Path) -> dict[str, list[str] | None]:
    """The vocabularies of a warm-start source: a checkpoint's manifest or a training state's state.json."""
    if (src / ckpt.MANIFEST).exists():
        man = ckpt.read_manifest(src)
        return {"instruction": (man.get("tokenizer") or {}).get("vocab"),
                "commentary": (man.get("lang_tokenizer") or {}).get("vocab")}
    if (src / "state.json").exists():
        return json.loads((src / "state.json").read_text()).get("vocabs") or {}
    return {}


def _vocab(kept: list[str] | None, texts: list[str], what: str, log, extend: bool = False) -> WordTokenizer:
    """``kept`` (a warm start's or a resumed run's vocabulary) if given, else one built from ``texts``.

    ``extend`` (warm starts): words of ``texts`` outside ``kept`` are appended after it, so every kept word keeps
    its id (and its embedding row, see ``_warm_start``) and a new task's words are not all <unk> -- e.g. a group
    LIBERO teacher started from the libero_object one. A resumed run passes its own vocabulary unextended."""
    if not kept:
        return WordTokenizer.train(texts)
    new = sorted({w for t in texts for w in WordTokenizer.words(t)} - set(kept))
    if new and extend:
        log(f"[teacher] {what} vocabulary: {len(kept)} kept words + {len(new)} new ones appended: {new[:10]}")
        return WordTokenizer(list(kept) + new)
    if new:
        log(f"[teacher] {what} words outside the kept vocabulary ({len(new)}) map to <unk>: {new[:10]}")
    return WordTokenizer(kept)


def _grown_rows(own: torch.Tensor, src: torch.Tensor) -> torch.Tensor | None:
    """``own`` with ``src`` copied into its first rows when only the first dimension grew (a vocabulary extended
    at the end, a longer text position table); None when the shapes are otherwise incompatible."""
    if own.dim() != src.dim() or own.dim() == 0 or own.shape[1:] != src.shape[1:] or own.shape[0] <= src.shape[0]:
        return None
    out = own.detach().clone()
    out[: src.shape[0]] = src.to(own.dtype)
    return out


def _warm_start(model: ReferenceVLA, src: Path, log) -> dict[str, Any]:
    """Copy weights (and normalisation buffers) from a training state dir or an exported checkpoint folder."""
    from safetensors.torch import load_file

    if (src / "state.safetensors").exists():
        tensors = {k[len("model/"):]: v for k, v in load_file(str(src / "state.safetensors")).items()
                   if k.startswith("model/")}
        step = json.loads((src / "state.json").read_text()).get("step")
    elif (src / ckpt.MANIFEST).exists():
        loaded, _, _, man = ckpt.load(src)  # verifies the sha256
        tensors, step = loaded.state_dict(), man.get("train", {}).get("step")
    else:
        raise SystemExit(f"--init {src}: neither a training state (state.safetensors) nor a checkpoint (manifest.json)")
    own = model.state_dict()
    take = {k: v.to(own[k].dtype) for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    grown = {k: g for k, v in tensors.items() if k in own and k not in take
             and (g := _grown_rows(own[k], v)) is not None}
    take.update(grown)
    skipped = sorted(k for k in own if k not in take)
    model.load_state_dict(take, strict=False)
    log(f"[teacher] warm start from {src} (step {step}): {len(take)} tensors copied ({len(grown)} into the first "
        f"rows of a grown table: {sorted(grown)[:6]}), {len(skipped)} kept fresh {skipped[:6]}")
    return {"path": str(src.relative_to(ROOT) if src.is_absolute() and src.is_relative_to(ROOT) else src),
            "step": step, "tensors_copied": len(take), "rows_copied_into_grown": sorted(grown), "kept_fresh": skipped}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--head", default=None, choices=["flow", "regression", "discrete"],
                    help="default: the head the suite's teacher uses (configs/default.yaml, per_suite)")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget of this invocation")
    ap.add_argument("--steps", type=int, default=None, help="total steps (schedule length)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS_TRAIN", "2")))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--fresh", action="store_true", help="ignore a saved training state")
    ap.add_argument("--state-dir", default=None, help="default: .cache/reference/<suite>[@head]")
    ap.add_argument("--out", default=None, help="default: methods/reference/checkpoints/<suite>[@head]")
    ap.add_argument("--demos", default="auto", choices=["auto", "suite", "collected", "all"],
                    help="data source (auto: the saved state's, else the suite's demos, else roll-outs made here)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=YAML", help="override a TrainConfig field")
    ap.add_argument("--init", default=None, metavar="DIR",
                    help="start a new run from the weights of a training state dir or checkpoint folder (warm start; "
                         "tensors whose shape differs keep their fresh init); ignored when resuming")
    args = ap.parse_args(argv)

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    from tqdm import tqdm

    from harness.plugins import make_suite

    torch.set_num_threads(args.threads)
    suite = make_suite(args.suite)
    if args.head is None:
        from harness.plugins import make_method

        args.head = make_method("reference").config(suite.suite_id).head
    raw = preset_for(suite.suite_id)
    for kv in args.set:
        k, v = kv.split("=", 1)
        raw[k] = parse_value(v)
    if args.steps is not None:
        raw["steps"] = args.steps
    if args.minutes is not None:
        raw["minutes"] = args.minutes
    if args.seed is not None:
        raw["seed"] = args.seed
    cfg = TrainConfig(**raw)
    tag = suite.suite_id if args.head == "flow" else f"{suite.suite_id}@{args.head}"
    state_dir = Path(args.state_dir or ROOT / ".cache" / "reference" / tag)
    out_dir = Path(args.out) if args.out else ckpt.checkpoint_dir(suite.suite_id, args.head)
    state_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    want, saved_meta = None, {}
    if not args.fresh and (state_dir / "state.json").exists():
        saved_meta = json.loads((state_dir / "state.json").read_text())
        want = saved_meta.get("data_hash")
    episodes, data_source = get_episodes(suite, cfg, ROOT / ".cache" / "reference" / suite.suite_id, log,
                                         args.demos, want)
    if not episodes:
        raise SystemExit(f"no demonstrations for {suite.suite_id}")
    dhash = data_hash(episodes)
    cams = list(suite.cameras) or sorted(episodes[0].images)
    # vocabularies: a resumed run keeps its own, a warm start keeps its source's (a vocabulary rebuilt from other
    # data shifts word ids or changes the embedding shapes, and the warm start then re-initialises them)
    keep = saved_meta.get("vocabs") or (_source_vocabs(Path(args.init)) if args.init else {})
    instructions = [e.instruction for e in episodes]
    commentary = [c for e in episodes for c in (e.commentary or [])]
    extend = not saved_meta.get("vocabs")  # a warm start may add words; a resumed run has its vocabulary
    tok = _vocab(keep.get("instruction"), instructions, "instruction", log, extend)
    has_com = any(e.commentary for e in episodes)
    mkw = dict(cfg.model)
    lang_tok = None
    if mkw.get("lang_head") and has_com:
        lang_tok = _vocab(keep.get("commentary"), commentary, "commentary", log, extend)
        mkw["lang_vocab_size"] = len(lang_tok)
    else:
        mkw["lang_head"] = False
    max_words = max(len(tok.encode(e.instruction, 10_000)) for e in episodes)
    mcfg = ModelConfig(**{**mkw, "cameras": cams, "proprio_dim": int(episodes[0].proprio.shape[-1]),
                          "action_dim": int(episodes[0].actions.shape[-1]), "head": args.head,
                          "vocab_size": len(tok), "max_text_len": max(mkw.get("max_text_len", 24), max_words)})
    # split by episode: every k-th episode held out for validation
    rng = np.random.default_rng(cfg.seed)
    n_ep = len(episodes)
    val_eps = set(rng.choice(n_ep, size=max(1, int(round(n_ep * cfg.val_fraction))), replace=False).tolist())
    demos = FlatDemos(episodes, cams, mcfg.image_size, mcfg.chunk, cfg.pad)
    ep_of = demos.episode.numpy()
    train_idx = np.nonzero(~np.isin(ep_of, list(val_eps)))[0]
    val_idx = np.nonzero(np.isin(ep_of, list(val_eps)))[0]
    log(f"[teacher] {suite.suite_id}: {n_ep} episodes ({len(val_eps)} held out), {demos.n} frames, "
        f"cameras {cams}, data hash {dhash}")

    model = ReferenceVLA(mcfg)
    train_a = demos.actions[torch.from_numpy(train_idx)]
    model.action_mean.copy_(train_a.mean(0))
    model.action_std.copy_(train_a.std(0).clamp_min(1e-2))
    train_p = demos.proprio[torch.from_numpy(train_idx)]
    model.proprio_mean.copy_(train_p.mean(0))
    model.proprio_std.copy_(train_p.std(0).clamp_min(1e-2))
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "pos" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "pos" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    step, curve, wall_before = 0, {"train": [], "val": []}, 0.0
    meta = None if args.fresh else ckpt.load_state(state_dir, model, opt)
    if meta is not None:
        if meta.get("data_hash") != dhash or meta.get("model_config") != mcfg.to_dict():
            raise SystemExit(f"{state_dir} holds a state for other data/config; rerun with --fresh to restart")
        step, wall_before = int(meta["step"]), float(meta.get("wall_s", 0.0))
        curve = json.loads((state_dir / "curve.json").read_text()) if (state_dir / "curve.json").exists() else curve
        log(f"[teacher] resumed from {state_dir} at step {step}")
        init_from = meta.get("init_from")
    else:
        init_from = _warm_start(model, Path(args.init), log) if args.init else None
    train_b = Batcher(demos, tok, lang_tok, mcfg, train_idx)
    val_b = Batcher(demos, tok, lang_tok, mcfg, val_idx)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[teacher] model {n_params / 1e6:.2f} M params, head {args.head}, {cfg.steps} steps of {cfg.batch}; "
        f"{args.threads} threads; load {os.getloadavg()}")

    def save(final: bool = False) -> None:
        wall = wall_before + (time.time() - t_start)
        meta = {"step": step, "data_hash": dhash, "model_config": mcfg.to_dict(), "train_config": asdict(cfg),
                "wall_s": wall, "init_from": init_from,
                "vocabs": {"instruction": tok.vocab, "commentary": lang_tok.vocab if lang_tok else None}}
        ckpt.save_state(state_dir, model, opt, meta)
        (state_dir / "curve.json").write_text(json.dumps(curve))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "curve.json").write_text(json.dumps(curve))
        previous = ckpt.read_manifest(out_dir) if (out_dir / ckpt.MANIFEST).exists() else {}
        ckpt.export(model, tok, lang_tok, out_dir, extra={
            "suite": suite.suite_id, "head": args.head, "seed": cfg.seed, "serves": serves,
            "data": {"hash": dhash, "episodes": n_ep, "frames": demos.n, "val_episodes": sorted(val_eps),
                     "source": data_source},
            "train": {"step": step, "steps": cfg.steps, "complete": step >= cfg.steps, "wall_s": round(wall, 1),
                      "threads": args.threads, "config": asdict(cfg), "init_from": init_from,
                      "last_val": curve["val"][-1] if curve["val"] else None},
            # evaluation results are recorded by `python -m methods.reference.record_eval` after `make bench`
            "evaluation": previous.get("evaluation") if previous.get("data", {}).get("hash") == dhash else None,
        })

    # a group suite's teacher (trained on every task of its member suites) serves the members too
    from harness.plugins import SUITES

    serves = [suite.suite_id]
    task_names = {t.name for t in suite.tasks()}
    for sid in SUITES.names():
        if sid != suite.suite_id and sid.startswith(suite.suite_id.split("-")[0]):
            try:
                if {t.name for t in make_suite(sid).tasks()} <= task_names:
                    serves.append(sid)
            except Exception:  # noqa: BLE001 — a member suite that cannot be built is simply not served
                pass
    model.train()
    t_start = time.time()
    budget = cfg.minutes * 60
    bar = tqdm(total=cfg.steps, initial=step, desc=f"teacher {tag}", dynamic_ncols=True, mininterval=5)
    acc: dict[str, list[float]] = {}
    t_last = time.time()
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        b = train_b.sample(step, cfg.batch, cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed * 7_777_777 + step)
        ls = losses(model, b, cfg, gen)
        opt.zero_grad(set_to_none=True)
        ls["total"].backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        for k, v in ls.items():
            acc.setdefault(k, []).append(float(v.detach()))
        acc.setdefault("grad_norm", []).append(float(gn))
        if step % 50 == 0 or step == cfg.steps:
            now = time.time()
            row = {"step": step, "lr": lr_at(step - 1, cfg), **{k: float(np.mean(v)) for k, v in acc.items()},
                   "samples_per_s": 50 * cfg.batch / max(1e-6, now - t_last), "load1": os.getloadavg()[0],
                   "wall_s": round(wall_before + now - t_start, 1)}
            t_last = now
            curve["train"].append(row)
            acc = {}
            bar.set_postfix(loss=f"{row['total']:.4f}", sps=f"{row['samples_per_s']:.0f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            v = {"step": step, **evaluate(model, val_b, cfg)}
            curve["val"].append(v)
            log(f"[teacher] step {step}: {v}")
        bar.update(1)
        if step % cfg.save_every == 0:
            save()
        if time.time() - t_start > budget:
            log(f"[teacher] time budget of {cfg.minutes} min reached at step {step}/{cfg.steps}; "
                f"rerun the same command to resume")
            break
    bar.close()
    save(final=True)
    log(f"[teacher] saved state to {state_dir} and checkpoint to {out_dir} (step {step}/{cfg.steps})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
