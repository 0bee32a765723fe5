"""Speed-ups and FLOPs ratios on a suite's *teacher architecture* before its teacher is trained.

FLOPs and latency of these models do not depend on the weights (pruning keeps a fixed number of tokens,
Shallow-pi a fixed number of blocks), so they can be measured on a randomly initialised reference VLA with the
suite's training preset (methods/reference/configs/train.yaml) and synthetic observations of the suite's camera
layout: a fixed smooth random frame per camera in which one small square moves a few pixels per step (so
VLA-Cache sees mostly static patches, as in a manipulation scene). Success cannot be measured this way.
Actions only: the driving teacher's commentary generation is switched off here (its length depends on trained
weights, which would make the comparison meaningless).

    python -m methods.token_pruning.arch_speed --preset libero --calls 200 --results results
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from methods.token_pruning.speedup import bootstrap_speedup

LAYOUTS = {  # suite id -> cameras, image size, proprio, action dim, instruction (from the suites' protocols)
    "libero": ("libero_object-v1", ["agentview", "wrist"], 128, 8, 7,
               "pick up the alphabet soup and place it in the basket"),
    "driving": ("driving", ["topdown"], 128, 6, 16, "turn left at the next intersection and keep to the lane"),
    "mock": ("mock-v1", ["top"], 32, 2, 2, "reach the red target"),
}


def synthetic_obs(cams, size, proprio, instruction, n, seed=0):
    rng = np.random.default_rng(seed)
    base = {}
    for c in cams:
        low = rng.integers(0, 255, (size // 16, size // 16, 3)).astype(np.float32)
        img = np.kron(low, np.ones((16, 16, 1)))  # blocky but static background
        base[c] = img.astype(np.uint8)
    out = []
    for t in range(n):
        imgs = {}
        for c in cams:
            im = base[c].copy()
            r0 = 20 + 3 * t
            im[r0:r0 + 12, 40:52] = 255  # the "arm": a square moving 3 px per step
            imgs[c] = im
        out.append({"images": imgs, "proprio": rng.normal(size=proprio).astype(np.float32) * 0.1,
                    "instruction": instruction})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", required=True, choices=sorted(LAYOUTS))
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--episode-len", type=int, default=8, help="consecutive frames per synthetic episode")
    ap.add_argument("--results", default="results")
    ap.add_argument("--checkpoint", default=None,
                    help="a reference checkpoint folder: its architecture and weights replace the random init")
    args = ap.parse_args(argv)
    import yaml

    from harness.interfaces import Task
    from harness.profiling.flops import count_flops
    from harness.results.provenance import load_average, now_iso
    from methods.reference.adapter import ReferencePolicy
    from methods.reference.config import ReferenceConfig
    from methods.reference.model import ModelConfig, ReferenceVLA, WordTokenizer
    from methods.shallow_pi.distill import build_student, kept_layers
    from methods.token_pruning.config import FastVConfig, RandomPruneConfig, SparseVLMConfig, VLACacheConfig
    from methods.token_pruning.pruning import FastVPolicy, RandomPrunePolicy, SparseVLMPolicy, VLACachePolicy

    torch.set_num_threads(1)
    suite_id, cams, size, proprio, adim, instruction = LAYOUTS[args.preset]
    preset = yaml.safe_load((Path(__file__).resolve().parents[1] / "reference" / "configs" / "train.yaml").read_text())
    mkw = dict(preset[args.preset]["model"])
    mkw["lang_head"] = False
    tok = WordTokenizer.train([instruction])
    torch.manual_seed(0)
    mcfg = ModelConfig(**{**mkw, "cameras": cams, "proprio_dim": proprio, "action_dim": adim, "vocab_size": len(tok)})
    teacher_model = ReferenceVLA(mcfg).eval()
    source = "random init, methods/reference/configs/train.yaml preset"
    if args.checkpoint:
        from methods.reference import checkpoint as ckpt

        teacher_model, tok, _, man = ckpt.load(Path(args.checkpoint))
        mcfg = teacher_model.cfg
        cams = list(mcfg.cameras)
        instruction = " ".join(tok.vocab[4:14])  # a 10-word instruction from its vocabulary
        source = (f"checkpoint {args.checkpoint} (sha256 {man['files']['model.safetensors'][:12]}, "
                  f"train step {man['train']['step']})")
    rcfg = ReferenceConfig(n_execute=4, binarize_gripper=args.preset == "libero")
    teacher = ReferencePolicy(teacher_model, tok, None, {"files": {}}, rcfg)
    pols = {"reference (random init)": teacher}
    for r in (0.5, 0.25):
        pols[f"fastv@keep{r}"] = FastVPolicy(teacher, FastVConfig(keep_ratio=r), f"fastv@keep{r}")
        pols[f"sparsevlm@keep{r}"] = SparseVLMPolicy(teacher, SparseVLMConfig(keep_ratio=r), f"sparsevlm@keep{r}")
        pols[f"vla_cache@keep{r}"] = VLACachePolicy(teacher, VLACacheConfig(keep_ratio=r), f"vla_cache@keep{r}")
        pols[f"random@keep{r}"] = RandomPrunePolicy(teacher, RandomPruneConfig(keep_ratio=r), f"random@keep{r}")
    for k in (9, 6, 4):
        st = ReferencePolicy(build_student(teacher_model, kept_layers(mcfg.depth, k, "uniform")).eval(), tok, None,
                             {"files": {}}, rcfg)
        pols[f"shallow_pi@keep{k}"] = st
        if k == 6:
            pols["shallow_pi@keep6+fastv0.5"] = FastVPolicy(st, FastVConfig(keep_ratio=0.5, prune_after=1),
                                                            "shallow_pi@keep6+fastv0.5")
    obs = synthetic_obs(cams, size, mcfg.proprio_dim, instruction, args.episode_len)
    task = Task("synthetic", instruction)

    def caller(pol):
        def call(i):
            j = i % len(obs)
            if j == 0:
                pol.reset(task, 0)
            return pol.infer(obs[j])
        return call

    calls = {k: caller(p) for k, p in pols.items()}
    flops = {}
    for k, p in pols.items():
        p.reset(task, 0)
        flops[k] = float(np.mean([count_flops(p.infer, o)[0] for o in obs]))
    names = list(calls)
    wall = {k: [] for k in names}
    load_before = load_average()
    print(f"[arch_speed] {args.preset}: {len(names)} policies, {args.calls} rounds, load {os.getloadavg()[0]:.1f}",
          file=sys.stderr)
    with torch.inference_mode():
        for i in range(args.warmup):
            for k in names:
                calls[k](i)
        for r in range(args.calls):
            i = args.warmup + r
            order = names[r % len(names):] + names[:r % len(names)]
            for k in order:
                w0 = time.perf_counter()
                calls[k](i)
                wall[k].append((time.perf_counter() - w0) * 1e3)
    load_after = load_average()
    t = np.array(wall[names[0]])
    rows = {}
    for k in names[1:]:
        s, lo, hi = bootstrap_speedup(t, np.array(wall[k]))
        rows[k] = {"speedup_wall": {"median_ratio": s, "ci95": [lo, hi]}, "flops_ratio": flops[k] / flops[names[0]],
                   "gflops_per_call": flops[k] / 1e9, "latency_ms_p50": float(np.median(wall[k]))}
    record = {"schema_version": 1, "kind": "architecture-only (random weights, synthetic observations)",
              "suite": suite_id, "preset": args.preset, "weights": source, "model_config": mcfg.to_dict(), "measured_at": now_iso(),
              "n_rounds": args.calls, "threads": 1, "load_average_before": load_before,
              "load_average_after": load_after, "teacher_latency_ms_p50": float(np.median(t)),
              "teacher_gflops_per_call": flops[names[0]] / 1e9, "methods": rows,
              "note": __doc__.split("\n\n")[0]}
    out = Path(args.results) / suite_id / "_architecture" / (
        "arch-speedup-cpu.json" if not args.checkpoint else "checkpoint-speedup-cpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\n{args.preset} architecture ({suite_id}), {source}: teacher p50 {np.median(t):.2f} ms, "
          f"{flops[names[0]] / 1e9:.4f} GFLOPs/call; {args.calls} rounds; load {load_before} -> {load_after}")
    print("| method | speedup [95% CI] | FLOPs ratio | p50 ms |\n|---|---|---|---|")
    for k, v in rows.items():
        s = v["speedup_wall"]
        print(f"| {k} | {s['median_ratio']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] | {v['flops_ratio']:.3f} | "
              f"{v['latency_ms_p50']:.1f} |")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
