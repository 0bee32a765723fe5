"""Paper tables: the published numbers (reports/paper_tables.yaml, with source and confidence) beside the figures
reproduced on vla-bench's reference models, and one claim card per (claim, method run).

Verdict rule (also in docs/reporting.md). Each condition is ``metric op value``; its reproduced figure has a 95%
interval [lo, hi] (a counted figure such as the FLOPs ratio is a point, lo = hi):
- consistent     — the whole interval lies inside the claim's region (e.g. lo > 2 for "speedup > 2");
- not reproduced — the whole interval lies outside it (e.g. hi <= 2);
- inconclusive   — the interval straddles the boundary, or the figure is missing.
A claim with several conditions is consistent if all are, not reproduced if any is, inconclusive otherwise.
Results come from vla-bench's reference teacher and its compressed students — never from the papers' models — and
every card says so.
"""
from __future__ import annotations

import math
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from reports.analysis import paired_vs, run_speedup
from reports.exports import markdown_table, write_table
from reports.loader import Results, Run
from reports.tables import teacher_run

HERE = Path(__file__).resolve().parent
DEFAULT_CLAIMS = HERE / "claims.yaml"
DEFAULT_PAPER = HERE / "paper_tables.yaml"
METRICS = {"speedup": "x", "success_diff_pp": " pp", "flops_ratio": "", "success_rate": ""}
OPS = {">", ">=", "<", "<="}
LABEL = "reproduced on vla-bench reference teacher"


class ClaimsError(ValueError):
    """A malformed claims or paper-tables file; the message names the file, the entry and the bad value."""


def norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def load_paper_tables(path: Path | str | None = None) -> list[dict]:
    path = Path(path or DEFAULT_PAPER)
    if not path.exists():
        raise ClaimsError(f"paper tables file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, list):
        raise ClaimsError(f"{path}: expected a list of entries, got {type(data).__name__}")
    for i, e in enumerate(data):
        missing = [k for k in ("paper", "metric", "value", "source", "confidence") if k not in (e or {})]
        if missing:
            raise ClaimsError(f"{path}: entry {i} lacks {missing}")
    return data


def load_claims(path: Path | str | None = None) -> list[dict]:
    path = Path(path or DEFAULT_CLAIMS)
    if not path.exists():
        raise ClaimsError(f"claims file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, list):
        raise ClaimsError(f"{path}: expected a list of claims, got {type(data).__name__}")
    seen = set()
    for i, c in enumerate(data):
        where = f"{path}: claim {i} ({(c or {}).get('id', '?')})"
        for k in ("id", "method", "paper", "claim", "suites"):
            if k not in (c or {}):
                raise ClaimsError(f"{where} lacks {k!r}")
        if c["id"] in seen:
            raise ClaimsError(f"{where}: duplicate id {c['id']!r}")
        seen.add(c["id"])
        if c.get("testable", True):
            if not c.get("conditions"):
                raise ClaimsError(f"{where}: a testable claim needs conditions (or testable: false + why)")
            for cond in c["conditions"]:
                if cond.get("metric") not in METRICS:
                    raise ClaimsError(f"{where}: unknown metric {cond.get('metric')!r} "
                                      f"(valid: {', '.join(sorted(METRICS))})")
                if cond.get("op") not in OPS:
                    raise ClaimsError(f"{where}: unknown op {cond.get('op')!r} (valid: {', '.join(sorted(OPS))})")
                if not isinstance(cond.get("value"), (int, float)):
                    raise ClaimsError(f"{where}: condition value must be a number, got {cond.get('value')!r}")
        elif not c.get("why"):
            raise ClaimsError(f"{where}: testable: false needs a 'why'")
        if c.get("variant_regex") is not None:
            try:
                re.compile(c["variant_regex"])
            except re.error as e:
                raise ClaimsError(f"{where}: bad variant_regex {c['variant_regex']!r}: {e}") from None
    return data


def evidence_for(claim: dict, paper: list[dict]) -> list[dict]:
    out = []
    for ev in claim.get("evidence") or []:
        for e in paper:
            if str(e["paper"]).lower().startswith(str(ev["paper"]).lower()) and e["metric"] == ev["metric"] \
                    and ("value" not in ev or e["value"] == ev["value"]):
                out.append(e)
    return out


# ----- verdicts -----
def condition_verdict(op: str, value: float, lo: float | None, hi: float | None) -> str:
    if lo is None or hi is None or any(isinstance(x, float) and math.isnan(x) for x in (lo, hi)):
        return "inconclusive"
    inside = {">": lambda x: x > value, ">=": lambda x: x >= value, "<": lambda x: x < value,
              "<=": lambda x: x <= value}[op]
    if inside(lo) and inside(hi):
        return "consistent"
    if not inside(lo) and not inside(hi):
        return "not_reproduced"
    return "inconclusive"


def combine(verdicts: list[str]) -> str:
    if any(v == "not_reproduced" for v in verdicts):
        return "not_reproduced"
    if verdicts and all(v == "consistent" for v in verdicts):
        return "consistent"
    return "inconclusive"


def figure(metric: str, run: Run, res: Results) -> dict[str, Any]:
    """The reproduced figure for a claim metric: value, 95% interval, and how it was obtained."""
    m = run.metrics or {}
    if metric == "speedup":
        sp = run_speedup(m)
        if sp is None:
            return {"value": None, "lo": None, "hi": None, "how": "no vs_teacher latency in metrics.json"}
        lo, hi = sp["ci95"] if sp["ci95"] else (None, None)
        return {"value": sp["value"], "lo": lo, "hi": hi, "how": sp["method"]}
    if metric == "flops_ratio":
        v = (m.get("vs_teacher") or {}).get("flops_ratio")
        return {"value": v, "lo": v, "hi": v, "how": "counted FLOPs per call, method / teacher (a point)"}
    if metric == "success_rate":
        lo, hi = run.success_ci95
        return {"value": run.success_rate, "lo": lo, "hi": hi, "how": f"episodes.jsonl, Wilson 95%, n={run.n}"}
    if metric == "success_diff_pp":
        t = teacher_run(res, run)
        if t is None:
            return {"value": None, "lo": None, "hi": None, "how": f"no complete teacher run ({run.teacher})"}
        pd_ = paired_vs(t.outcomes(), run.outcomes())
        if pd_["n"] == 0:
            return {"value": None, "lo": None, "hi": None, "how": "no shared episode ids with the teacher run"}
        return {"value": pd_["diff"] * 100, "lo": pd_["ci95"][0] * 100, "hi": pd_["ci95"][1] * 100,
                "how": f"paired on {pd_['n']} shared episodes vs teacher run {t.run_id}: bootstrap 95%, "
                       f"exact McNemar p={pd_['p_mcnemar']:.3g}", "p_mcnemar": pd_["p_mcnemar"]}
    raise ClaimsError(f"unknown metric {metric!r}")


def _fmt(v: float | None, metric: str) -> str:
    if v is None:
        return "–"
    return {"speedup": f"{v:.2f}x", "success_diff_pp": f"{v:+.1f} pp", "flops_ratio": f"{v:.3f}",
            "success_rate": f"{v:.3f}"}[metric]


def _num(v: float, metric: str) -> str:
    return format(v, {"speedup": ".2f", "success_diff_pp": "+.1f", "flops_ratio": ".3f",
                      "success_rate": ".3f"}[metric])


def interval_text(lo: float | None, hi: float | None, metric: str) -> str:
    if lo is None or hi is None or metric == "flops_ratio":  # counted: a point, no interval
        return ""
    return f" [{_num(lo, metric)}, {_num(hi, metric)}]"


def describe(metric: str, f: dict) -> str:
    if f["value"] is None:
        return f"{metric}: n/a ({f['how']})"
    return _fmt(f["value"], metric) + interval_text(f["lo"], f["hi"], metric)


def claim_applies(claim: dict, run: Run) -> bool:
    if norm(run.method_name) not in {norm(claim["method"]), *(norm(a) for a in claim.get("aliases") or [])}:
        return False
    if claim.get("variant_regex") is not None and not re.search(claim["variant_regex"], run.variant or ""):
        return False
    return any(run.suite.startswith(p) for p in claim["suites"])


def claim_cards(res: Results, claims: list[dict], paper: list[dict]) -> list[dict]:
    cards = []
    for c in claims:
        ev = evidence_for(c, paper)
        base = {"claim_id": c["id"], "paper": c["paper"], "arxiv": c.get("arxiv"), "claim": c["claim"],
                "evidence": ev, "note": c.get("note", ""), "label": LABEL}
        if not c.get("testable", True):
            cards.append({**base, "verdict": "untestable", "why": c["why"], "runs": [],
                          "summary": f"{c['paper']}: {c['claim']} — not testable on vla-bench: {c['why']}"})
            continue
        matched = []
        for sel in res.selected():
            if sel.complete and sel.run.method != sel.run.teacher and claim_applies(c, sel.run):
                matched.append(sel.run)
        if not matched:
            why = f"no complete run of {c['method']!r} on a {'/'.join(c['suites'])} suite yet"
            others = sorted({s.run.method for s in res.selected() if s.complete and s.run.method != s.run.teacher
                             and claim_applies({**c, "variant_regex": None}, s.run)})
            if others:
                why += (f"; runs of {', '.join(others)} exist but their variant does not match "
                        f"{c['variant_regex']!r} (reports/claims.yaml)")
            elsewhere = sorted({s.run.suite for s in res.selected() if s.complete
                                and claim_applies({**c, "variant_regex": None, "suites": [""]}, s.run)
                                and not claim_applies({**c, "variant_regex": None}, s.run)})
            if elsewhere:
                why += (f" (it has complete runs on {', '.join(elsewhere)}, which the claim's benchmark family does "
                        "not cover: see the leaderboard)")
            cards.append({**base, "verdict": "no_results", "why": why, "runs": [],
                          "summary": f"{c['paper']}: {c['claim']} — no reproduction yet: {why}"})
            continue
        for run in matched:
            conds = []
            for cond in c["conditions"]:
                f = figure(cond["metric"], run, res)
                v = condition_verdict(cond["op"], cond["value"], f["lo"], f["hi"])
                conds.append({"metric": cond["metric"], "op": cond["op"], "claimed": cond["value"],
                              "reproduced": f["value"], "lo": f["lo"], "hi": f["hi"], "how": f["how"],
                              "verdict": v, "text": describe(cond["metric"], f)})
            verdict = combine([x["verdict"] for x in conds])
            cards.append({**base, "verdict": verdict, "why": "", "suite": run.suite, "method": run.method,
                          "profile": run.profile, "reportable": run.reportable, "run_id": run.run_id,
                          "teacher": run.teacher or "", "n": run.n, "conditions": conds,
                          "summary": f"{c['paper']}: {c['claim']} — {run.method}, {LABEL} ({run.teacher or 'no teacher'}) on "
                                     f"{run.suite} [{run.profile}{'' if run.reportable else ', NOT reportable'}]: "
                                     + ", ".join(x["text"] for x in conds) + f": {verdict.replace('_', ' ')}"})
    return cards


def _none(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def cards_frame(cards: list[dict]) -> pd.DataFrame:
    rows = []
    for c in cards:
        pub = "; ".join(f"{e['value']} {e.get('unit') or ''} ({e['confidence']}: {e['source']})".strip()
                        for e in c["evidence"])
        common = {"claim_id": c["claim_id"], "paper": c["paper"], "claim": c["claim"], "published": pub,
                  "verdict": c["verdict"], "why": c["why"]}
        if not c.get("conditions"):
            rows.append({**common, "suite": None, "method": None, "profile": None, "reportable": None,
                         "metric": None, "op": None, "claimed": None, "reproduced": None, "lo": None, "hi": None,
                         "condition_verdict": None, "label": c["label"]})
        for cond in c.get("conditions", []):
            rows.append({**common, "suite": c["suite"], "method": c["method"], "profile": c["profile"],
                         "reportable": c["reportable"], "metric": cond["metric"], "op": cond["op"],
                         "claimed": cond["claimed"], "reproduced": cond["reproduced"],
                         "lo": cond["lo"], "hi": cond["hi"], "condition_verdict": cond["verdict"],
                         "label": f"{c['label']} ({c['teacher']})"})
    return pd.DataFrame(rows)


def published_frame(paper: list[dict]) -> pd.DataFrame:
    cols = ["paper", "arxiv", "table", "benchmark", "base_model", "method", "metric", "value", "unit", "source",
            "confidence", "notes"]
    return pd.DataFrame([{k: (None if e.get(k) is None else str(e.get(k))) for k in cols} for e in paper])


def write_paper_tables(res: Results, out: Path, *, claims_path: str | Path | None = None,
                       paper_path: str | Path | None = None, env: Any = None) -> Path:
    """Writes OUT/paper-tables/{index.html, claims.*, published.*}; returns the HTML page."""
    from reports.site import environment

    claims, paper = load_claims(claims_path), load_paper_tables(paper_path)
    cards = claim_cards(res, claims, paper)
    d = out / "paper-tables"
    shutil.rmtree(d, ignore_errors=True)  # only files this function writes live here
    d.mkdir(parents=True, exist_ok=True)
    cdf = cards_frame(cards)
    # missing cells as None: pandas >= 3 stores None in string columns as NaN, which is truthy
    rows = cdf.astype(object).where(cdf.notna(), None)
    md_rows = [[r.paper, r.claim, r.published or "–", r.suite or "–", r.method or "–", r.profile or "–",
                f"{r.metric} {r.op} {r.claimed}" if r.metric else "–",
                "–" if r.metric is None else _fmt(_none(r.reproduced), r.metric) + interval_text(
                    _none(r.lo), _none(r.hi), r.metric),
                (r.condition_verdict or r.verdict or "–").replace("_", " ")] for r in rows.itertuples()]
    summaries = "".join(f"- {c['summary']}\n" for c in cards)
    write_table(cdf, d / "claims", "### Paper claims vs reproduction (" + LABEL + ")\n\n" + markdown_table(
        ["paper", "claim", "published (confidence: source)", "suite", "method", "profile", "condition",
         "reproduced [95% CI]", "verdict"], md_rows) + "\n#### Claim cards\n\n" + summaries)
    pdf = published_frame(paper)
    write_table(pdf, d / "published", "### Published numbers (as reported by the papers; not reproduced)\n\n"
                + markdown_table(list(pdf.columns), pdf.fillna("–").values.tolist()))
    env = env or environment()
    papers: dict[str, list[dict]] = {}
    for e in paper:
        papers.setdefault(str(e["paper"]), []).append(e)
    html = env.get_template("paper.html").render(
        title="paper tables", root="../", results_root=str(res.root),
        as_of=max((r.updated_at for r in res.runs), default="(no runs)"), cards=cards, papers=papers, label=LABEL,
        exports=[f.name for f in sorted(d.iterdir()) if f.suffix in (".csv", ".parquet", ".md")])
    page = d / "index.html"
    page.write_text(html)
    return page
