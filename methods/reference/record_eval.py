"""Record a finished `make bench METHOD=reference ...` run in the checkpoint's manifest.json ("evaluation").

    python -m methods.reference.record_eval results/<suite>/reference/<run_id> [--checkpoint DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from methods.reference import checkpoint as ckpt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--checkpoint", default=None, help="default: the folder the run's suite/head resolves to")
    args = ap.parse_args(argv)
    run_dir = Path(args.run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    run = json.loads((run_dir / "run.json").read_text())
    head = run.get("method_config", {}).get("head", "flow")
    if args.checkpoint:
        folder = Path(args.checkpoint)
    else:
        from harness.plugins import make_method
        from methods.reference.config import ReferenceConfig

        folder = make_method("reference").checkpoint_folder(metrics["suite"], ReferenceConfig(head=head))
    manifest = ckpt.read_manifest(folder)
    weights = manifest["files"][ckpt.WEIGHTS]
    entry = {
        "suite": metrics["suite"], "method": metrics["method"], "profile": metrics["profile"],
        "reportable": metrics["reportable"], "run_id": metrics["run_id"], "results": str(run_dir),
        "n_episodes": metrics["n_episodes"], "n_errors": metrics["n_errors"],
        "successes": round(metrics["success_rate"] * metrics["n_episodes"]),
        "success_rate": metrics["success_rate"], "success_ci95_wilson": metrics["success_ci95"],
        "complete": metrics.get("complete"), "suite_metrics": metrics.get("suite_metrics"),
        "gflops_per_call": metrics.get("gflops_per_call"), "latency_ms_p50": (metrics.get("latency_ms") or {}).get("p50"),
        "cpu_ms_p50": (metrics.get("cpu_ms") or {}).get("p50"), "threads": metrics.get("threads"),
        "weights_sha256": weights, "train_step": manifest.get("train", {}).get("step"),
    }
    # the run id does not depend on the weights: an entry is replaced only for the same run AND weights
    key = (entry["run_id"], entry["suite"], entry["weights_sha256"])
    evals = [e for e in (manifest.get("evaluation") or [])
             if (e.get("run_id"), e.get("suite"), e.get("weights_sha256")) != key]
    manifest["evaluation"] = evals + [entry]
    (folder / ckpt.MANIFEST).write_text(json.dumps(manifest, indent=1))
    print(f"recorded {entry['suite']} {entry['profile']}: {entry['successes']}/{entry['n_episodes']} "
          f"({entry['success_rate']:.1%}, 95% CI {entry['success_ci95_wilson']}) in {folder / ckpt.MANIFEST}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
