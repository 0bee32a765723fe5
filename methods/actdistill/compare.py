"""Paired comparison of ActDistill runs with the teacher's run on the same episodes (same seeds), plus FLOPs
ratio, speedup and router statistics, from the runner's own files (metrics.json, episodes.jsonl).

    python -m methods.actdistill.compare --suite mock-v1 --teacher-results results \
        --results results --out methods/actdistill/results/mock-v1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.stats import paired_difference, wilson


def latest_run(root: Path, suite: str, method: str, profile: str = "full") -> Path | None:
    runs = [p for p in (root / suite / method).glob(f"{profile}-*") if (p / "metrics.json").exists()]
    return max(runs, key=lambda p: (p / "metrics.json").stat().st_mtime) if runs else None


def episodes(run: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for line in (run / "episodes.jsonl").read_text().splitlines():
        if line.strip():
            e = json.loads(line)
            out[e["episode_id"]] = e
    return out


def summarize(run: Path, teacher_run: Path | None) -> dict[str, Any]:
    m = json.loads((run / "metrics.json").read_text())
    eps = episodes(run)
    k = sum(e["success"] for e in eps.values())
    row: dict[str, Any] = {
        "method": m["method"], "run": str(run), "profile": m["profile"], "reportable": m["reportable"],
        "n": len(eps), "success_rate": k / max(1, len(eps)), "success_ci95": list(wilson(k, len(eps))),
        "gflops_per_call": m.get("gflops_per_call"), "latency_ms_p50": (m.get("latency_ms") or {}).get("p50"),
        "vs_teacher": {key: (m.get("vs_teacher") or {}).get(key) for key in ("teacher", "flops_ratio", "speedup",
                                                                             "cpu_speedup",
                                                                             "teacher_gflops_per_call")},
        "router": {key: (m.get("method_stats") or {}).get("overall", {}).get(key)
                   for key in ("blocks_executed_mean", "block_fraction", "block_usage")},
        "router_per_task": {t: {"blocks_executed_mean": v.get("blocks_executed_mean"), "block_usage": v.get("block_usage")}
                            for t, v in ((m.get("method_stats") or {}).get("per_task") or {}).items()},
        "load_average": m.get("profiling", {}).get("load_average"),
    }
    if teacher_run is not None:
        t_eps = episodes(teacher_run)
        shared = sorted(set(eps) & set(t_eps))
        a = [bool(eps[i]["success"]) for i in shared]
        b = [bool(t_eps[i]["success"]) for i in shared]
        tk = sum(b)
        row["teacher"] = {"run": str(teacher_run), "n": len(shared), "success_rate": tk / max(1, len(shared)),
                          "success_ci95": list(wilson(tk, len(shared))),
                          "successes_by_episode": {i: s for i, s in zip(shared, b)}}
        row["paired_vs_teacher"] = paired_difference(b, a)  # (b - a convention) method - teacher; bootstrap CI, McNemar
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", required=True)
    ap.add_argument("--results", default="results")
    ap.add_argument("--teacher-results", default=None, help="results root holding the teacher's run (same profile)")
    ap.add_argument("--teacher", default="reference")
    ap.add_argument("--profile", default="full", help="pair runs of this profile only")
    ap.add_argument("--methods", default="actdistill,actdistill@static,actdistill@nograph,actdistill@budget0.3,"
                                        "actdistill@budget0.5,actdistill@budget0.7")
    ap.add_argument("--out", required=True, help="folder for summary.json and summary.md")
    a = ap.parse_args(argv)
    troot = Path(a.teacher_results or a.results)
    teacher_run = latest_run(troot, a.suite, a.teacher, a.profile)
    rows = []
    for meth in a.methods.split(","):
        run = latest_run(Path(a.results), a.suite, meth, a.profile)
        if run is not None:
            rows.append(summarize(run, teacher_run))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher_metrics = json.loads((teacher_run / "metrics.json").read_text()) if teacher_run else None
    doc = {"suite": a.suite, "teacher_run": str(teacher_run) if teacher_run else None,
           "teacher_metrics": {k: teacher_metrics.get(k) for k in ("success_rate", "success_ci95", "n_episodes",
                                                                   "gflops_per_call", "latency_ms", "run_id")}
           if teacher_metrics else None, "rows": rows}
    (out / "summary.json").write_text(json.dumps(doc, indent=1))
    lines = [f"# ActDistill on {a.suite}", "",
             "| method | n | success [95% CI] | teacher (same episodes) | paired diff [95% CI], McNemar p | "
             "FLOPs ratio | speedup (p50) | blocks run / call |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r.get("teacher") or {}
        p = r.get("paired_vs_teacher") or {}
        vt = r["vs_teacher"]
        ci = r["success_ci95"]
        tci = t.get("success_ci95", [None, None])

        def f(x, fmt="{:.3f}"):
            return "—" if x is None else fmt.format(x)

        lines.append(
            f"| {r['method']} | {r['n']} | {f(r['success_rate'])} [{f(ci[0])}, {f(ci[1])}] | "
            f"{f(t.get('success_rate'))} [{f(tci[0])}, {f(tci[1])}] | "
            f"{f(p.get('diff'), '{:+.3f}')} [{f((p.get('ci95') or [None])[0], '{:+.3f}')}, "
            f"{f((p.get('ci95') or [None, None])[1], '{:+.3f}')}], p={f(p.get('p_mcnemar'))} | "
            f"{f(vt.get('flops_ratio'))} | {f(vt.get('speedup'), '{:.2f}x')} | "
            f"{f(r['router'].get('blocks_executed_mean'), '{:.2f}')} |")
    lines += ["", "Router: fraction of calls in which each layer (backbone block + expert block) ran, overall:", ""]
    for r in rows:
        u = r["router"].get("block_usage")
        lines.append(f"- {r['method']}: " + ("—" if not u else " ".join(f"{x:.2f}" for x in u)))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
