"""The static report: index, one leaderboard page per suite, one page per (suite, method, profile), the paper
tables and the exports — a pure function of a results folder. Jinja2 with autoescape on (instructions and
generated explanations are untrusted text); inline CSS/JS/SVG only, so it opens from file:// with no network."""
from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from reports.analysis import all_devices, projected_devices
from reports.loader import Results, Selection
from reports.plots import pareto_svg, success_svg
from reports.tables import leaderboard, measured_latency, per_task_matrix

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEXT_LIMIT = 10  # examples per generated-text field on a method page
TEXT_KEYS = re.compile(r"explan|comment|text|caption|reason|language", re.IGNORECASE)
SPEEDUP_METHOD = ("a delta-method interval on log p50 from each record's p90-p50 spread and n (raw samples, when a "
                  "run stores them, are bootstrapped instead)")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text).strip("_") or "_"


def suite_page(suite: str) -> str:
    return f"suite-{slug(suite)}.html"


def run_page(suite: str, method: str, profile: str) -> str:
    return f"run-{slug(suite)}--{slug(method)}--{slug(profile)}.html"


# ----- template filters -----
def _bad(v: Any) -> bool:
    return v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v)))


def fmt(v: Any, spec: str = ".3g", suffix: str = "") -> str:
    if _bad(v):
        return "\u2013"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return format(v, spec) + suffix
    return str(v) + suffix


def sort_value(v: Any) -> str:
    if _bad(v) or isinstance(v, bool):
        return "" if _bad(v) else str(int(v))
    return repr(v) if isinstance(v, (int, float)) else str(v)


def human(v: Any) -> str:
    if _bad(v):
        return "\u2013"
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def duration(v: Any) -> str:
    """A time given in ms, in the unit that keeps it readable (the sort key stays in ms)."""
    if _bad(v):
        return "\u2013"
    if v >= 1:
        return f"{v:.3g} ms"
    if v >= 1e-3:
        return f"{v * 1e3:.3g} \u00b5s"
    return f"{v * 1e6:.3g} ns"


def stat(v: Any) -> str:
    if _bad(v):
        return "\u2013"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)):
        return format(v, ".4g")
    if isinstance(v, list):
        return "[" + ", ".join(stat(x) for x in v) + "]"
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def spark(v: Any) -> Markup:
    """A list of numbers (e.g. per-block router usage) as a tiny inline bar chart followed by the values; any
    other value as escaped text."""
    if not (isinstance(v, list) and v and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                and not _bad(x) for x in v)):
        return Markup.escape(stat(v))
    top = max(max(abs(x) for x in v), 1e-12)
    w, h = 6, 18
    bars = "".join(f'<rect x="{i * w}" y="{h - h * abs(x) / top:.2f}" width="{w - 1}" height="{h * abs(x) / top:.2f}"'
                   f' fill="#2a6fb0"><title>[{i}] {x:.4g}</title></rect>' for i, x in enumerate(v))
    svg = (f'<svg class="spark" width="{len(v) * w}" height="{h}" viewBox="0 0 {len(v) * w} {h}" role="img" '
           f'aria-label="bar chart of {len(v)} values">{bars}</svg>')
    return Markup(svg) + Markup(" ") + Markup.escape(stat(v))


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(f=fmt, v=sort_value, human=human, stat=stat, dur=duration, spark=spark)
    return env


# ----- page data -----
def _suite_metric_keys(rows: list[dict]) -> list[str]:
    return sorted({k.split(":", 1)[1] for r in rows for k in r if k.startswith("suite:")})


def _plots(rows: list[dict], measured: list[str], suite: str) -> tuple[list[dict], str]:
    plots, notes = [], []
    done = [r for r in rows if r["complete"]]
    for d in measured:
        key = f"latency_p50_ms[{d}]"
        svg = pareto_svg(done, key, f"measured p50 latency on {d} (ms per call)",
                         f"{suite}: success vs latency ({d}, measured)", f"pareto-latency-{slug(d)}",
                         x_err_key=f"latency_p50_ci_halfwidth_ms[{d}]")
        if svg:
            plots.append({"svg": svg, "caption": f"Success vs measured latency on {d}. Vertical bars: Wilson 95% CI; "
                                                 "horizontal bars: 95% CI of the p50; dashed: Pareto frontier; "
                                                 "hollow: not reportable."})
        missing = [r["method"] for r in done if r.get(key) is None]
        if missing:
            notes.append(f"no {d} latency (not profiled, e.g. a privileged scripted expert): {', '.join(missing)}")
    svg = pareto_svg(done, "gflops_per_call", "GFLOPs per inference call (counted)",
                     f"{suite}: success vs FLOPs", "pareto-flops")
    if svg:
        plots.append({"svg": svg, "caption": "Success vs counted GFLOPs per call. Vertical bars: Wilson 95% CI; "
                                             "FLOPs are counted, not sampled (no horizontal bar); dashed: Pareto "
                                             "frontier; hollow: not reportable."})
    missing = [r["method"] for r in done if r.get("gflops_per_call") is None]
    if missing:
        notes.append(f"no FLOPs count: {', '.join(missing)}")
    svg = success_svg(done, f"{suite}: success by method", "success-by-method")
    if svg:
        plots.append({"svg": svg, "caption": "Success rate per method and profile with Wilson 95% intervals "
                                             "(all complete rows, profiled or not)."})
    return plots, "; ".join(notes)


def _texts(episodes: list[dict]) -> list[tuple[str, str, str]]:
    out, count = [], {}
    for e in episodes:
        fields = [(f"method_stats.{k}", v) for k, v in (e.get("method_stats") or {}).items()]
        fields += [(f"metrics.{k}", v) for k, v in (e.get("metrics") or {}).items() if TEXT_KEYS.search(k)]
        for k, v in fields:
            vals = v if isinstance(v, list) else [v]
            for x in vals:
                if isinstance(x, str) and x.strip() and count.get(k, 0) < TEXT_LIMIT:
                    count[k] = count.get(k, 0) + 1
                    out.append((e["episode_id"], k, x))
    return out


def _as_of(res: Results) -> str:
    return max((r.updated_at for r in res.runs), default="(no runs)")


def suite_context(res: Results, suite: str, projected: list[dict]) -> dict[str, Any]:
    rows = leaderboard(res, suite, projected)
    for r in rows:
        r["page"] = run_page(r["suite"], r["method"], r["profile"])
    complete = [r for r in rows if r["complete"]]
    partial = [r for r in rows if not r["complete"]]
    measured = sorted({k[len("latency_p50_ms["):-1] for r in rows for k, v in r.items()
                       if k.startswith("latency_p50_ms[") and v is not None}, key=lambda d: (d != "cpu", d))
    plots, plot_notes = _plots(complete, measured, suite)
    tasks, task_rows = per_task_matrix(res, suite)
    instructions = {}
    for sel in res.selected(suite):
        for t, c in sel.run.per_task().items():
            if c.get("instruction"):
                instructions.setdefault(t, c["instruction"])
    return {"suite": suite, "slug": slug(suite), "page": suite_page(suite), "rows": complete, "partial": partial,
            "all_rows": rows, "measured": measured, "suite_metric_keys": _suite_metric_keys(rows), "plots": plots,
            "plot_notes": plot_notes, "tasks": tasks, "task_rows": task_rows,
            "instructions": sorted(instructions.items())}


def run_context(res: Results, sel: Selection, row: dict) -> dict[str, Any]:
    r = sel.run
    ms = (r.metrics or {}).get("method_stats") or {}
    overall = ms.get("overall") if isinstance(ms.get("overall"), dict) else \
        {k: v for k, v in ms.items() if k != "per_task"}
    per_task = ms.get("per_task") or {}
    prov = dict(r.run.get("provenance") or {})
    for k in ("git_commit", "git_dirty", "config_hash", "python", "threads", "host", "load_average_start",
              "load_average_end", "packages"):
        prov.setdefault(k, None)
    spec = {"spec": r.run.get("spec"), "method_config": r.run.get("method_config"),
            "reportable": r.run.get("reportable"), "resumes": r.run.get("resumes")}
    profiling = (r.metrics or {}).get("profiling")
    return {"row": row, "suite_page": suite_page(r.suite), "measured": measured_latency(res, sel),
            "per_task": r.per_task(), "stats_overall": overall or {}, "stats_tasks": sorted(per_task),
            "stats_per_task": per_task, "texts": _texts(r.episodes), "text_limit": TEXT_LIMIT,
            "suite_metrics": (r.metrics or {}).get("suite_metrics") or {}, "runs": sel.all_runs, "prov": prov,
            "run_json": {"started_at": r.run.get("started_at"), "finished_at": r.run.get("finished_at", "")},
            "seeds": [e["seed"] for e in r.episodes], "episodes": r.episodes,
            "spec_json": json.dumps(spec, indent=2, sort_keys=True, default=str),
            "profiling_json": json.dumps(profiling, indent=2, sort_keys=True, default=str) if profiling else ""}


def build_site(res: Results, out: Path, *, claims_path: str | Path | None = None,
               paper_path: str | Path | None = None) -> Path:
    """Render everything under ``out``; returns the index page."""
    from reports.exports import write_exports
    from reports.paper import write_paper_tables

    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("suite-*.html"), *out.glob("run-*.html")]:  # pages of runs no longer there
        stale.unlink()
    shutil.rmtree(out / "exports", ignore_errors=True)
    env = environment()
    projected = projected_devices()
    common = {"results_root": str(res.root), "as_of": _as_of(res), "projected": projected, "root": ""}
    devices_html = env.get_template("devices.html").render(devices=all_devices())
    suites = [suite_context(res, s, projected) for s in res.suites()]
    exports = write_exports(suites, out / "exports")
    for s in suites:
        s["exports"] = exports.get(s["suite"], [])
        html = env.get_template("suite.html").render(title=s["suite"], s=s, speedup_method=SPEEDUP_METHOD,
                                                     **common)
        (out / s["page"]).write_text(html)
        by_key = {(r["suite"], r["method"], r["profile"]): r for r in s["all_rows"]}
        for sel in res.selected(s["suite"]):
            row = by_key[sel.key]
            html = env.get_template("run.html").render(title=f"{row['method']} on {row['suite']}",
                                                       **run_context(res, sel, row), **common)
            (out / row["page"]).write_text(html)
    write_paper_tables(res, out, claims_path=claims_path, paper_path=paper_path, env=env)
    index = out / "index.html"
    index.write_text(env.get_template("index.html").render(title="leaderboard", suites=suites, n_runs=len(res.runs),
                                                           broken=res.broken, devices_html=devices_html, **common))
    return index
