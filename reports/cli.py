"""``vla-bench report | gate | paper-tables | report-screenshot`` (registered by harness/cli.py).

All four read only a results folder (no re-running, no network). Usage errors (a missing folder, a malformed
result file, a bad tolerance) exit with code 2 and name the bad value; the gate exits 1 on a regression.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE = 2


def _err(msg: str) -> int:
    print(f"vla-bench: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_report(a: argparse.Namespace) -> int:
    from reports.loader import ResultsError, load_results
    from reports.site import build_site

    try:
        res = load_results(a.results)
    except ResultsError as e:
        return _err(str(e))
    if not res.runs and not a.allow_empty:
        return _err(f"no runs (folders with run.json) under {a.results!r}; pass --allow-empty to render anyway")
    index = build_site(res, Path(a.out), claims_path=a.claims, paper_path=a.paper_tables)
    for b in res.broken:
        print(f"warning: unreadable run {b.path}: {b.error}", file=sys.stderr)
    print(f"report: {len(res.runs)} runs, {len(res.suites())} suites -> {index} (open file://{index.resolve()})")
    return 0


def cmd_paper_tables(a: argparse.Namespace) -> int:
    from reports.loader import ResultsError, load_results
    from reports.paper import ClaimsError, write_paper_tables

    try:
        res = load_results(a.results)
        out = write_paper_tables(res, Path(a.out), claims_path=a.claims, paper_path=a.paper_tables)
    except (ResultsError, ClaimsError) as e:
        return _err(str(e))
    print(f"paper tables -> {out}")
    return 0


def cmd_gate(a: argparse.Namespace) -> int:
    from reports.gate import GateConfig, gate
    from reports.loader import ResultsError, load_results

    cfg = GateConfig(alpha=a.alpha, latency_tol=a.latency_tol, flops_tol=a.flops_tol, cpu_tol=a.cpu_tol)
    try:
        cfg.check()
        base = load_results(a.baseline, strict=True)
        cand = load_results(a.candidate, strict=True)
    except (ResultsError, ValueError) as e:
        return _err(str(e))
    for name, res in (("baseline", base), ("candidate", cand)):
        if not res.runs:
            return _err(f"{name} {str(res.root)!r} holds no runs (no */*/*/run.json)")
    code, text = gate(base, cand, cfg)
    print(text)
    return code


def cmd_screenshot(a: argparse.Namespace) -> int:
    from reports.browser import BrowserUnavailable, find_chromium, screenshot

    page = Path(a.page) if a.page else _showcase_page(Path(a.site))
    if not page.exists():
        return _err(f"page {str(page)!r} does not exist; run `make report` first")
    try:
        screenshot(find_chromium(), page, Path(a.out), width=a.width, height=a.height)
    except BrowserUnavailable as e:
        return _err(str(e))
    print(f"screenshot -> {a.out}")
    return 0


def _showcase_page(site: Path) -> Path:
    """The suite page with the most plots (Pareto plots need profiled runs), else the index."""
    pages = sorted(site.glob("suite-*.html"))
    if not pages:
        return site / "index.html"
    return max(pages, key=lambda p: (p.read_text().count('<svg class="plot"'), -pages.index(p)))


def _tol(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_commands(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="static HTML leaderboard + exports from a results folder")
    r.add_argument("--results", "-r", default="results")
    r.add_argument("--out", "-o", default="reports/site")
    r.add_argument("--claims", default=None, help="claims YAML (default: reports/claims.yaml)")
    r.add_argument("--paper-tables", default=None, help="published numbers YAML (default: reports/paper_tables.yaml)")
    r.add_argument("--allow-empty", action="store_true", help="render even when the folder holds no runs")
    r.set_defaults(fn=cmd_report)

    p = sub.add_parser("paper-tables", help="published numbers beside reproduced ones, with claim cards")
    p.add_argument("--results", "-r", default="results")
    p.add_argument("--out", "-o", default="reports/site")
    p.add_argument("--claims", default=None)
    p.add_argument("--paper-tables", default=None)
    p.set_defaults(fn=cmd_paper_tables)

    g = sub.add_parser("gate", help="fail when success, speedup or FLOPs ratio regress beyond noise/tolerance")
    g.add_argument("--baseline", "-b", required=True)
    g.add_argument("--candidate", "-c", required=True)
    g.add_argument("--alpha", type=_tol, default=0.05, help="exact McNemar significance level (default 0.05)")
    g.add_argument("--latency-tol", type=_tol, default=0.25,
                   help="allowed relative fall of speedup vs the teacher (default 0.25)")
    g.add_argument("--cpu-tol", type=_tol, default=None,
                   help="allowed relative fall of the thread-CPU-time speedup (default: --latency-tol)")
    g.add_argument("--flops-tol", type=_tol, default=0.02,
                   help="allowed relative rise of the FLOPs ratio vs the teacher (default 0.02)")
    g.set_defaults(fn=cmd_gate)

    s = sub.add_parser("report-screenshot", help="PNG of a report page in headless Chromium")
    s.add_argument("--site", default="reports/site")
    s.add_argument("--page", default=None,
                   help="page to capture (default: the suite page with the most plots, else SITE/index.html)")
    s.add_argument("--out", "-o", default="docs/report.png")
    s.add_argument("--width", type=int, default=1400)
    s.add_argument("--height", type=int, default=1000)
    s.set_defaults(fn=cmd_screenshot)
