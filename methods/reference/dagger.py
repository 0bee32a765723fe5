"""DAgger rounds for a reference teacher (`python -m methods.reference.dagger --suite driving --rounds 3`).

Behaviour cloning alone left the driving teacher at 16-28% closed-loop success although its validation L1 kept
falling (docs/footguns.md): its own small errors lead it into states the expert never visits. Each round here
1. freezes the current checkpoint (copied to ``.cache/reference/dagger/<suite>/round<k>``),
2. lets it drive ``--per-task`` training-seed episodes per task while the privileged expert labels every visited
   state (``methods.reference.data --dagger``, new seeds each round; evaluation seeds are never used),
3. warm-starts a new training run on all part files (expert roll-outs + every DAgger part) from the previous
   training state (``train --fresh --init``) for ``--steps`` steps.
Every round appends to ``.cache/reference/dagger/<suite>/rounds.json``; rerunning continues after the last
finished round. Evaluate with `make bench METHOD=teacher SUITE=<suite> PROFILE=quick` afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], log: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": os.environ.get("SDL_VIDEODRIVER", "offscreen")}
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed with exit code {rc}; see {log}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--head", default="regression", choices=["flow", "regression", "discrete"])
    ap.add_argument("--rounds", type=int, default=3, help="total rounds (finished rounds are skipped)")
    ap.add_argument("--per-task", type=int, default=10, help="policy-driven episodes per task and round")
    ap.add_argument("--beta", type=float, default=0.0, help="probability that a chunk is the expert's")
    ap.add_argument("--steps", type=int, default=1500, help="training steps per round")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--size", type=int, default=64, help="stored image size (as the expert roll-outs)")
    ap.add_argument("--seed-base", type=int, default=1000, help="training-seed index of round 1 (+100 per round)")
    ap.add_argument("--demos", default="collected", choices=["collected", "all"],
                    help="training data: part files only (driving) or the suite's recorded demos + parts (LIBERO)")
    args = ap.parse_args(argv)

    py = sys.executable
    tag = f"{args.suite}@{args.head}" if args.head != "flow" else args.suite
    work = ROOT / ".cache" / "reference" / "dagger" / tag
    work.mkdir(parents=True, exist_ok=True)
    book = work / "rounds.json"
    rounds = json.loads(book.read_text()) if book.exists() else []
    state = ROOT / ".cache" / "reference" / tag
    ckpt_dir = ROOT / "methods" / "reference" / "checkpoints" / tag
    parts = ROOT / ".cache" / "reference" / args.suite
    parts.mkdir(parents=True, exist_ok=True)
    log = work / "dagger.log"
    for k in range(len(rounds) + 1, args.rounds + 1):
        t0 = time.time()
        frozen = work / f"round{k}"
        shutil.rmtree(frozen, ignore_errors=True)
        shutil.copytree(ckpt_dir, frozen)
        shutil.rmtree(work / f"state{k - 1}", ignore_errors=True)
        shutil.copytree(state, work / f"state{k - 1}")  # the training state this round starts from
        n_parts = len(list(parts.glob("demos_part*.npz")))
        out = parts / f"demos_part{n_parts}.npz"
        start = args.seed_base + 100 * (k - 1)
        _run([py, "-m", "methods.reference.data", "--suite", args.suite, "--per-task", str(args.per_task),
              "--start", str(start), "--size", str(args.size), "--dagger", str(frozen), "--beta", str(args.beta),
              "--out", str(out)], log)
        collected = json.loads(out.with_suffix(".json").read_text())["stats"]
        _run([py, "-m", "methods.reference.train", "--suite", args.suite, "--head", args.head, "--demos", args.demos,
              "--fresh", "--init", str(work / f"state{k - 1}"), "--steps", str(args.steps), "--minutes", "120",
              "--threads", "1", "--set", f"lr={args.lr}", "--set", "warmup=50", "--set", "eval_every=500",
              "--set", "save_every=250"], log)
        rounds.append({"round": k, "driver": str(frozen.relative_to(ROOT)), "part": out.name, "seed_start": start,
                       "beta": args.beta, "collected": collected, "train_steps": args.steps, "lr": args.lr,
                       "wall_s": round(time.time() - t0, 1)})
        book.write_text(json.dumps(rounds, indent=1))
        print(f"[dagger] round {k}: driver success on its training seeds "
              f"{collected['policy_successes']}/{collected['episodes']}; trained {args.steps} steps", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
