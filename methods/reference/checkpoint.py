"""Checkpoints of the reference model: safetensors weights + a JSON manifest; loading verifies sha256 and
never unpickles. Also the resumable training state (weights + optimizer as safetensors, step/RNG as JSON)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from methods.reference.model import ModelConfig, ReferenceVLA, WordTokenizer

ROOT = Path(__file__).resolve().parent
CHECKPOINTS = ROOT / "checkpoints"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


class ChecksumError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_commit() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", str(ROOT)], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip())
        return {"commit": commit, "dirty_methods_reference": dirty}
    except Exception:  # noqa: BLE001
        return {"commit": None, "dirty_methods_reference": None}


def checkpoint_dir(suite_id: str, head: str = "flow") -> Path:
    return CHECKPOINTS / (suite_id if head == "flow" else f"{suite_id}@{head}")


def export(model: ReferenceVLA, tok: WordTokenizer, lang_tok: WordTokenizer | None, out: Path, *,
           extra: dict[str, Any], fp16: bool = True) -> dict[str, Any]:
    """Write model.safetensors (+ fp16) and manifest.json (files with sha256, config, tokenizers, extra)."""
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.detach().to(torch.float16) if fp16 and v.is_floating_point() else v.detach()).contiguous().clone()
          for k, v in model.state_dict().items()}
    tmp = out / (WEIGHTS + ".tmp")
    # one metadata key only: safetensors writes the metadata map in hash order, so two keys make the bytes (and the
    # sha256 in the manifest) differ between two exports of the same weights (docs/footguns.md, session 9)
    save_file(sd, str(tmp), metadata={"format": "pt"})
    tmp.replace(out / WEIGHTS)
    files = {WEIGHTS: sha256_file(out / WEIGHTS)}
    for extra_file in ("curve.json",):
        if (out / extra_file).exists():
            files[extra_file] = sha256_file(out / extra_file)
    manifest = {
        "schema_version": 1,
        "model": "reference-vla",
        "files": files,
        "config": model.cfg.to_dict(),
        "params": sum(p.numel() for p in model.parameters()),
        "tokenizer": {"vocab": tok.vocab},
        "lang_tokenizer": {"vocab": lang_tok.vocab} if lang_tok is not None else None,
        "code": code_commit(),
        **extra,
    }
    (out / (MANIFEST + ".tmp")).write_text(json.dumps(manifest, indent=1))
    (out / (MANIFEST + ".tmp")).replace(out / MANIFEST)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / MANIFEST).read_text())


def load(folder: Path) -> tuple[ReferenceVLA, WordTokenizer, WordTokenizer | None, dict[str, Any]]:
    """Load a checkpoint folder; every file named in the manifest must match its sha256."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for name, digest in manifest["files"].items():
        got = sha256_file(folder / name)
        if got != digest:
            raise ChecksumError(f"{folder / name}: sha256 {got} does not match the manifest's {digest}")
    cfg = ModelConfig.from_dict(manifest["config"])
    model = ReferenceVLA(cfg)
    sd = load_file(str(folder / WEIGHTS))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    model.eval()
    tok = WordTokenizer(manifest["tokenizer"]["vocab"])
    lt = manifest.get("lang_tokenizer")
    return model, tok, (WordTokenizer(lt["vocab"]) if lt else None), manifest


# ----- resumable training state (no pickle) -----
def save_state(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    state_meta: dict[str, Any] = {}
    for pid, st in osd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"opt/{pid}/{key}"] = val.detach().contiguous().clone()
            else:
                state_meta[f"{pid}/{key}"] = val
    tmp = folder / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    meta = {**meta, "param_groups": osd["param_groups"], "opt_scalars": state_meta}
    (folder / "state.json.tmp").write_text(json.dumps(meta))
    tmp.replace(folder / "state.safetensors")
    (folder / "state.json.tmp").replace(folder / "state.json")


def load_state(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any] | None:
    if not (folder / "state.json").exists() or not (folder / "state.safetensors").exists():
        return None
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "state.safetensors"))
    model.load_state_dict({k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")})
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt/"):
            _, pid, key = k.split("/", 2)
            state.setdefault(int(pid), {})[key] = v
    for k, v in meta["opt_scalars"].items():
        pid, key = k.split("/", 1)
        state.setdefault(int(pid), {})[key] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


class StepLog:
    """Bookkeeping after each step of a resumable training loop (``cfg``: steps, save_every, minutes): every 25
    steps and at the last, the mean of each loss since the previous row goes to ``curve`` and ``bar``; ``save()``
    every ``save_every`` steps; past ``minutes`` (> 0) ``save()``, close ``bar``, TimeoutError(``timeout(step)``)."""

    def __init__(self, cfg: Any, curve: list[dict[str, Any]], bar: Any, t0: float, save: Callable[[], None],
                 timeout: Callable[[int], str]):
        self.cfg, self.curve, self.bar, self.t0, self.save, self.timeout = cfg, curve, bar, t0, save, timeout
        self.acc: dict[str, list[float]] = {}

    def __call__(self, step: int, losses: dict[str, torch.Tensor]) -> None:
        """After step ``step`` (counted from 1) with these losses."""
        cfg = self.cfg
        for k, v in losses.items():
            self.acc.setdefault(k, []).append(float(v.detach()))
        if step % 25 == 0 or step == cfg.steps:
            row = {"step": step, **{k: round(float(np.mean(v)), 5) for k, v in self.acc.items()}}
            self.curve.append(row)
            self.acc = {}
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k != "step"})
        self.bar.update(1)
        if step % cfg.save_every == 0 and step < cfg.steps:
            self.save()
        if cfg.minutes > 0 and time.time() - self.t0 > cfg.minutes * 60 and step < cfg.steps:
            self.save()
            self.bar.close()
            raise TimeoutError(self.timeout(step))
