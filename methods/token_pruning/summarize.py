"""Markdown table of committed runs (results/<suite>/<method>/<run>/metrics.json + speedup-cpu.json) for the
token-pruning and Shallow-pi methods beside their teacher.

    python -m methods.token_pruning.summarize --suite mock-v1 [--results results] [--prefix fastv,sparsevlm,...]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT = "reference,fastv,sparsevlm,vla_cache,random,shallow_pi"


def latest_runs(root: Path, suite: str, prefixes: list[str], profile: str | None) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for mpath in sorted((root / suite).glob("*/*/metrics.json")):
        method = mpath.parent.parent.name
        if not any(method == p or method.startswith(p + "@") for p in prefixes):
            continue
        m = json.loads(mpath.read_text())
        if not m.get("complete") or (profile and m.get("profile") != profile):
            continue
        if method not in out or m.get("updated_at", "") > out[method].get("updated_at", ""):
            m["_path"] = str(mpath.parent)
            out[method] = m
    return out


def paired(run_a: str, run_b: str) -> dict:
    """Paired success difference b - a on the episodes both runs share (bootstrap CI, exact McNemar)."""
    from harness.stats import paired_difference

    def load(run: str) -> dict[str, bool]:
        eps = [json.loads(x) for x in (Path(run) / "episodes.jsonl").read_text().splitlines() if x.strip()]
        return {e["episode_id"]: bool(e["success"]) for e in eps}

    a, b = load(run_a), load(run_b)
    ids = sorted(set(a) & set(b))
    return paired_difference([a[i] for i in ids], [b[i] for i in ids])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--results", default="results")
    ap.add_argument("--methods", default=DEFAULT, help="method-name prefixes")
    ap.add_argument("--profile", default=None)
    args = ap.parse_args(argv)
    root = Path(args.results)
    runs = latest_runs(root, args.suite, args.methods.split(","), args.profile)
    teacher = runs.get("reference")
    print("| method | profile | n | success [95% CI] | Δ success vs teacher, pp [95% CI] | p50 ms (bench) | speedup (bench p50) | "
          "speedup [95% CI] (interleaved rounds) | FLOPs ratio | tokens / blocks |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method in sorted(runs, key=lambda k: (k != "reference", k)):
        m = runs[method]
        lo, hi = m["success_ci95"]
        vt = (m.get("vs_teacher") or {}) if method != "reference" else {}
        sp_path = root / args.suite / method / "speedup-cpu.json"
        sp = json.loads(sp_path.read_text()) if sp_path.exists() else None
        sp_txt = (f"{sp['speedup_wall']['median_ratio']:.2f} [{sp['speedup_wall']['ci95'][0]:.2f}, "
                  f"{sp['speedup_wall']['ci95'][1]:.2f}] (n={sp['n_rounds']})") if sp else "–"
        fr = vt.get("flops_ratio") if vt else (sp or {}).get("flops_ratio")
        if fr is None and teacher is not None and method != "reference" and m.get("gflops_per_call"):
            fr = m["gflops_per_call"] / teacher["gflops_per_call"]  # from the two runs' own profiles
        stats = (m.get("method_stats") or {}).get("overall", {})
        tok = []
        for k in ("mean_tokens_kept", "mean_vision_keep_mean_per_layer", "mean_tokens_reused"):
            if stats.get(k) is not None:
                tok.append(f"{k.removeprefix('mean_')}={stats[k]:.2f}")
        d = ""
        if teacher is not None and method != "reference":
            pdiff = paired(teacher["_path"], m["_path"])
            d = (f"{100 * pdiff['diff']:+.1f} [{100 * pdiff['ci95'][0]:+.1f}, {100 * pdiff['ci95'][1]:+.1f}] "
                 f"(paired n={pdiff['n']}, McNemar p={pdiff['p_mcnemar']:.2f})")
        lat = (m.get("latency_ms") or {}).get("p50")
        spd = f"{vt['speedup']:.2f}" if vt.get("speedup") else "–"
        print(f"| {method} | {m['profile']} | {m['n_episodes']} | {m['success_rate']:.3f} [{lo:.3f}, {hi:.3f}] | {d} | "
              f"{lat:.1f} | {spd} | {sp_txt} | "
              f"{'–' if fr is None else f'{fr:.3f}'} | {', '.join(tok)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
