"""Leaderboard exports a reviewer can paste into a paper: CSV and Parquet (every column, full precision) and
Markdown (the headline columns, formatted, projected figures labelled as such)."""
from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import pandas as pd

INTERNAL = {"page"}


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def _ci(lo: Any, hi: Any, spec: str) -> str:
    if lo is None or hi is None:
        return ""
    return f" [{format(lo, spec)}, {format(hi, spec)}]"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table ('|' in cells escaped); no third-party dependency."""
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def leaderboard_markdown(rows: list[dict], measured: list[str], projected: list[dict]) -> str:
    header = ["method", "profile", "reportable", "n", "success [95% CI]", "Δ vs teacher pp [95% CI]",
              "GFLOPs/call", "speedup vs teacher [95% CI]", "FLOPs ratio", "params"]
    header += [f"{d} p50 ms (measured)" for d in measured]
    header += [f"{d['name']} ms (projected)" for d in projected]
    body = []
    for r in rows:
        line = [r["method"], r["profile"], "yes" if r["reportable"] else "NO",
                str(r["n_episodes"]) + ("" if r["complete"] else " (partial)"),
                _fmt(r["success_rate"], ".3f") + _ci(r["success_lo"], r["success_hi"], ".3f"),
                _fmt(r["vs_teacher_diff_pp"], "+.1f") + _ci(r["vs_teacher_diff_lo_pp"], r["vs_teacher_diff_hi_pp"],
                                                             "+.1f"),
                _fmt(r["gflops_per_call"], ".4g"),
                _fmt(r["speedup"], ".2f") + _ci(r["speedup_lo"], r["speedup_hi"], ".2f"),
                _fmt(r["flops_ratio"], ".3f"), _fmt(r["params"], ".3g")]
        line += [_fmt(r.get(f"latency_p50_ms[{d}]"), ".3g") for d in measured]
        line += [_fmt(r.get(f"projected_ms[{d['name']}]"), ".3g") for d in projected]
        body.append(line)
    return markdown_table(header, body)


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{k: v for k, v in r.items() if k not in INTERNAL} for r in rows])


def write_table(df: pd.DataFrame, base: Path, md: str) -> list[Path]:
    df.to_csv(base.with_suffix(".csv"), index=False)
    df.to_parquet(base.with_suffix(".parquet"), index=False)
    base.with_suffix(".md").write_text(md)
    return [base.with_suffix(s) for s in (".csv", ".parquet", ".md")]


def write_exports(suites: list[dict], out: Path) -> dict[str, list[dict[str, str]]]:
    """Per suite: leaderboard-<suite>.{csv,parquet,md} and per-task-<suite>.{csv,parquet,md}."""
    from reports.analysis import projected_devices
    from reports.site import slug

    out.mkdir(parents=True, exist_ok=True)
    projected = projected_devices()
    links: dict[str, list[dict[str, str]]] = {}
    for s in suites:
        rows = s["all_rows"]
        base = out / f"leaderboard-{slug(s['suite'])}"
        files = write_table(frame(rows), base, f"### {s['suite']}: leaderboard (vla-bench)\n\n"
                            + leaderboard_markdown(rows, s["measured"], projected)
                            + "\nProjected latency: roofline estimate (see the report's device assumptions), "
                              "not a measurement. Reference-model results.\n")
        trows = [{"method": r["method"], "profile": r["profile"], "reportable": r["reportable"], "task": t,
                  "n": c["n"], "successes": c["successes"], "success_rate": c["success_rate"],
                  "success_lo": c["success_ci95"][0], "success_hi": c["success_ci95"][1]}
                 for r in s["task_rows"] for t, c in r["tasks"].items()]
        md = markdown_table(["method", "profile", *s["tasks"]],
                            [[r["method"], r["profile"], *[
                                f"{r['tasks'][t]['success_rate']:.2f} ({r['tasks'][t]['successes']}/{r['tasks'][t]['n']})"
                                if t in r["tasks"] else "–" for t in s["tasks"]]] for r in s["task_rows"]])
        files += write_table(pd.DataFrame(trows), out / f"per-task-{slug(s['suite'])}",
                             f"### {s['suite']}: per-task success (vla-bench)\n\n" + md)
        links[s["suite"]] = [{"label": f.name, "href": f"exports/{f.name}"} for f in files]
    items = "".join(f'<li><a href="{html.escape(f.name)}">{html.escape(f.name)}</a></li>'
                    for f in sorted(out.iterdir()) if f.name != "index.html")
    (out / "index.html").write_text('<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" '
                                    'href="data:,"><title>exports · vla-bench</title></head><body><h1>Exports</h1>'
                                    f'<p><a href="../index.html">back to the report</a></p><ul>{items}</ul></body>'
                                    '</html>\n')
    return links
