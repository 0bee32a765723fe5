"""Weight averaging ("model soup") of reference checkpoints that share one architecture and vocabulary.

    python -m methods.reference.soup A B [C ...] --out OUT [--weights 0.5,0.5]

Every member is loaded through ``checkpoint.load`` (sha256 verified). Floating-point tensors are averaged in
float32 with the given weights (default: uniform) and exported like a trained checkpoint (fp16 safetensors +
manifest.json). ``curve.json`` holds the members' own training curves; the manifest's ``soup`` entry names the
members with their sha256, weights and training records, and the rest of the manifest (suite, head, data, seed)
comes from the last member. Used for the driving teacher (methods/reference/README.md, session 9): two
fine-tunes that traded instruction-dependent behaviours averaged into one that keeps both.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from methods.reference import checkpoint as ck

_IDENTITY = ("schema_version", "model", "files", "config", "params", "tokenizer", "lang_tokenizer", "code",
             "evaluation", "soup")


def soup(members: Sequence[Path], out: Path, weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Average ``members`` into ``out``; returns the written manifest."""
    members = [Path(m) for m in members]
    if len(members) < 2:
        raise ValueError(f"a soup needs at least two checkpoints, got {len(members)}")
    weights = [1.0 / len(members)] * len(members) if weights is None else [float(w) for w in weights]
    if len(weights) != len(members):
        raise ValueError(f"{len(weights)} weights for {len(members)} checkpoints")
    if abs(sum(weights) - 1.0) > 1e-6 or min(weights) < 0:
        raise ValueError(f"weights must be >= 0 and sum to 1, got {weights}")
    loaded = [ck.load(m) for m in members]
    base, tok, lang_tok, _ = loaded[0]
    for path, (model, t, lt, _) in zip(members[1:], loaded[1:]):
        if model.cfg.to_dict() != base.cfg.to_dict():
            raise ValueError(f"{path}: model config differs from {members[0]}")
        if t.vocab != tok.vocab or (lt.vocab if lt else None) != (lang_tok.vocab if lang_tok else None):
            raise ValueError(f"{path}: vocabulary differs from {members[0]}")
    states = [m.state_dict() for m, *_ in loaded]
    with torch.no_grad():
        for k, v in states[0].items():
            if v.is_floating_point():
                acc = weights[0] * v
                for w, sd in zip(weights[1:], states[1:]):
                    acc = acc + w * sd[k]
                v.copy_(acc)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    curves = []
    for path in members:
        c = path / "curve.json"
        curves.append({"member": str(path), "curve": json.loads(c.read_text()) if c.exists() else None})
    (out / "curve.json").write_text(json.dumps({"kind": "weight average", "members": curves}))
    manifests = [man for *_, man in loaded]
    extra = {k: v for k, v in manifests[-1].items() if k not in _IDENTITY}
    extra["soup"] = {"members": [str(m) for m in members],
                     "members_sha256": [man["files"][ck.WEIGHTS] for man in manifests],
                     "weights": weights,
                     "members_train": [man.get("train") for man in manifests],
                     "members_code": [man.get("code") for man in manifests]}
    return ck.export(base, tok, lang_tok, out, extra=extra)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("members", nargs="+", help="checkpoint folders (manifest.json + model.safetensors)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--weights", default=None, help="comma-separated, summing to 1 (default: uniform)")
    a = ap.parse_args(argv)
    for m in a.members:
        if not (Path(m) / ck.MANIFEST).exists():
            ap.error(f"{m}: no {ck.MANIFEST} (not a reference checkpoint folder)")
    try:
        w = [float(x) for x in a.weights.split(",")] if a.weights else None
        man = soup([Path(m) for m in a.members], Path(a.out), w)
    except ValueError as e:
        ap.error(str(e))
    print(f"[soup] {len(a.members)} checkpoints -> {a.out} (sha256 {man['files'][ck.WEIGHTS][:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
