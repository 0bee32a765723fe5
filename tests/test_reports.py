"""The reporter: static site, projection, claim cards, exports, and the pages in headless Chromium.

Fixture: fresh mock-v1 smoke runs of mock, mock@teacher, mock@broken and expert (seconds), with untrusted text
(<script>) injected into an instruction and a generated explanation.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.cli import main
from reports.analysis import bytes_per_call, project, speedup_interval
from reports.loader import load_results
from reports.paper import DEFAULT_PAPER, combine, condition_verdict
from reports.site import run_page
from reports.tables import leaderboard

METHODS = ("mock", "mock@teacher", "mock@broken", "expert")
XSS = "<script>window.__pwned = 1</script>"
XSS_EXPLANATION = '<img src=x onerror="window.__pwned = 2">'


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """Real runner output. The mock suite's teacher is the trained reference VLA (~0.2 s per call); the fixture
    profiles against the tiny ``mock@teacher`` instead so the tests stay fast. The reporter reads whatever
    teacher a run names, so nothing here depends on which one it is."""
    from suites._mock.suite import MockSuite

    root = tmp_path_factory.mktemp("reports") / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MockSuite, "teacher", "mock@teacher")
        for m in METHODS:
            assert main(["bench", "--method", m, "--suite", "mock-v1", "--profile", "smoke", "--results",
                         str(root), "--quiet"]) == 0
    (run,) = root.glob("mock-v1/mock/*/")
    lines = [json.loads(x) for x in (run / "episodes.jsonl").read_text().splitlines()]
    lines[0]["instruction"] = XSS
    lines[0]["method_stats"]["explanation"] = XSS_EXPLANATION
    (run / "episodes.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    m = json.loads((run / "metrics.json").read_text())
    m["method_stats"]["overall"]["blocks_used"] = [1.0, 0.5, 0.25]  # a router-style list statistic
    (run / "metrics.json").write_text(json.dumps(m))
    return root


@pytest.fixture(scope="module")
def site(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    return out


def _episodes(results: Path, method: str) -> list[dict]:
    (run,) = results.glob(f"mock-v1/{method}/*/")
    return [json.loads(x) for x in (run / "episodes.jsonl").read_text().splitlines()]


def test_site_has_index_suite_and_method_pages(results, site):
    assert (site / "index.html").exists() and (site / "suite-mock-v1.html").exists()
    for m in METHODS:
        assert (site / run_page("mock-v1", m, "smoke")).exists(), m
    assert (site / "paper-tables" / "index.html").exists()
    html = (site / "suite-mock-v1.html").read_text()
    assert html.count('<svg class="plot"') == 3  # success vs cpu latency, success vs FLOPs, success by method
    assert "Pareto frontier" in html


def test_leaderboard_figures_are_recomputed_from_episodes(results, site):
    rows = {r["method"]: r for r in leaderboard(load_results(results), "mock-v1")}
    assert set(rows) == set(METHODS)
    for m in METHODS:
        eps = _episodes(results, m)
        assert rows[m]["n_episodes"] == len(eps)
        assert rows[m]["success_rate"] == pytest.approx(sum(e["success"] for e in eps) / len(eps))
    teacher = {e["episode_id"]: e["success"] for e in _episodes(results, "mock@teacher")}
    broken = {e["episode_id"]: e["success"] for e in _episodes(results, "mock@broken")}
    diff = 100 * sum(broken[i] - teacher[i] for i in teacher) / len(teacher)
    assert rows["mock@broken"]["vs_teacher_diff_pp"] == pytest.approx(diff)
    html = (site / "suite-mock-v1.html").read_text()
    assert f'data-v="{rows["mock@broken"]["success_rate"]!r}"' in html


def test_untrusted_text_is_escaped(site):
    page = (site / run_page("mock-v1", "mock", "smoke")).read_text()
    assert XSS not in page and XSS_EXPLANATION not in page
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=" in page  # the explanation is shown, as text
    for other in site.rglob("*.html"):
        assert XSS not in other.read_text() and XSS_EXPLANATION not in other.read_text(), other


def test_no_remote_assets(site):
    for page in site.rglob("*.html"):
        html = page.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), page
        assert "<script src" not in html and 'rel="stylesheet"' not in html, page


def test_non_reportable_rows_are_marked(site):
    html = (site / "suite-mock-v1.html").read_text()
    assert html.count("NOT reportable (smoke)") >= len(METHODS)
    assert html.count('class="nonreportable"') >= len(METHODS)


def test_method_page_shows_stats_and_provenance(results, site):
    page = (site / run_page("mock-v1", "mock", "smoke")).read_text()
    assert "blocks_used" in page and "[1, 0.5, 0.25]" in page and "infer_calls" in page
    assert '<svg class="spark" width="18"' in page and "<title>[2] 0.25</title>" in page  # router-style bars
    run = json.loads(next(results.glob("mock-v1/mock/*/run.json")).read_text())
    assert '<details id="provenance">' in page and run["provenance"]["git_commit"] in page
    assert str(_episodes(results, "mock")[0]["seed"]) in page
    assert "projected" in page and "assumed: no dtype recorded" in page


def test_latest_complete_run_is_shown_and_said(results, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(results, root)
    (old,) = root.glob("mock-v1/mock@broken/*/")
    for name, complete, stamp in (("smoke-newer", True, "2999-01-01T00:00:00+00:00"),
                                  ("smoke-partial", False, "3000-01-01T00:00:00+00:00")):
        new = old.with_name(name)
        shutil.copytree(old, new)
        run = json.loads((new / "run.json").read_text())
        run["run_id"] = name
        (new / "run.json").write_text(json.dumps(run))
        m = json.loads((new / "metrics.json").read_text())
        m.update(run_id=name, updated_at=stamp, complete=complete)
        (new / "metrics.json").write_text(json.dumps(m))
        eps = [json.loads(x) for x in (new / "episodes.jsonl").read_text().splitlines()]
        (new / "episodes.jsonl").write_text("".join(json.dumps({**e, "success": True}) + "\n" for e in eps))
    rows = {r["method"]: r for r in leaderboard(load_results(root), "mock-v1")}
    assert rows["mock@broken"]["run_id"] == "smoke-newer"
    assert rows["mock@broken"]["success_rate"] == 1.0
    assert rows["mock@broken"]["runs_note"] == "latest complete of 3 runs (by updated_at)"


def test_in_progress_run_is_reported_as_partial(results, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(results, root)
    (src,) = root.glob("mock-v1/mock/*/")
    new = root / "mock-v1" / "mock" / "full-inprogress"
    new.mkdir()
    run = json.loads((src / "run.json").read_text())
    run["run_id"], run["spec"]["profile"] = "full-inprogress", "full"
    (new / "run.json").write_text(json.dumps(run))
    lines = (src / "episodes.jsonl").read_text().splitlines(keepends=True)
    (new / "episodes.jsonl").write_text("".join(lines[:3]) + lines[3][:20])  # torn last line, no metrics.json
    out = tmp_path / "site"
    assert main(["report", "--results", str(root), "--out", str(out)]) == 0
    html = (out / "suite-mock-v1.html").read_text()
    partial = html[html.index('id="partial"'):]
    assert "showing the latest partial run (3 episodes so far)" in partial and "partial</span>" in partial


def test_roofline_projection_and_byte_assumption():
    dev = {"name": "d", "peak_tflops": 100.0, "bandwidth_gbs": 1000.0, "efficiency": 0.5}
    p = project(dev, gflops_per_call=10.0, nbytes=4e6)  # compute 10e9/(50e12)=0.2 ms; memory 4e6/500e9=0.008 ms
    assert p["bound"] == "compute" and p["ms"] == pytest.approx(0.2)
    p = project(dev, gflops_per_call=0.001, nbytes=4e9)
    assert p["bound"] == "memory" and p["ms"] == pytest.approx(8.0)
    assert project(dev, None, 1.0) is None
    nbytes, how = bytes_per_call({"params": 1000}, {"method_config": {}})
    assert nbytes == 4000 and "fp32" in how and "assumed" in how
    nbytes, how = bytes_per_call({"params": 1000}, {"method_config": {"dtype": "bf16"}})
    assert nbytes == 2000 and "assumed" not in how
    nbytes, how = bytes_per_call({"params": 1000, "bytes_per_call": 123.0}, {})
    assert nbytes == 123.0 and "bytes_per_call" in how


def test_every_device_profile_has_its_source():
    from reports.analysis import all_devices, projected_devices

    names = {d["name"] for d in projected_devices()}
    assert {"jetson-agx-orin", "jetson-thor", "a100-sxm", "h100-sxm"} <= names
    for d in all_devices():
        assert d.get("source") and d.get("derivation") and d.get("kind"), d["name"]


def test_speedup_interval():
    t = {"p50": 2.0, "p90": 2.2, "n": 100}
    m = {"p50": 1.0, "p90": 1.1, "n": 100}
    s = speedup_interval(t, m)
    assert s["value"] == pytest.approx(2.0) and s["ci95"][0] < 2.0 < s["ci95"][1]
    assert speedup_interval(t, {"p50": 1.0, "p90": 1.1})["ci95"] is None  # no n: no interval
    s = speedup_interval({**t, "samples": [2.0, 2.1, 1.9] * 20}, {**m, "samples": [1.0, 1.05, 0.95] * 20})
    assert "bootstrap" in s["method"] and s["ci95"][0] <= 2.0 <= s["ci95"][1]


@pytest.mark.parametrize("op, value, lo, hi, verdict", [
    (">", 2.0, 2.1, 2.5, "consistent"), (">", 2.0, 1.5, 1.9, "not_reproduced"), (">", 2.0, 1.9, 2.4, "inconclusive"),
    (">", 2.0, 1.8, 2.0, "not_reproduced"), (">=", 1.67, 1.67, 1.8, "consistent"),
    ("<", 0.5, 0.3, 0.3, "consistent"), ("<", 0.5, 0.6, 0.6, "not_reproduced"), ("<=", 0.5, 0.4, 0.6, "inconclusive"),
    (">", -1.0, None, None, "inconclusive"),
])
def test_condition_verdict_rule(op, value, lo, hi, verdict):
    assert condition_verdict(op, value, lo, hi) == verdict


def test_combined_verdict():
    assert combine(["consistent", "consistent"]) == "consistent"
    assert combine(["consistent", "inconclusive"]) == "inconclusive"
    assert combine(["inconclusive", "not_reproduced"]) == "not_reproduced"


def test_claim_cards_on_mock_results(results, tmp_path, capsys):
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump([{
        "id": "mock-claim", "method": "MOCK", "paper": "Mock paper", "claim": "faster, no success drop",
        "suites": ["mock"], "conditions": [{"metric": "speedup", "op": ">", "value": 1.0},
                                           {"metric": "success_diff_pp", "op": ">", "value": -10.0}],
        "variant_regex": "^(|broken)$"}]))
    out = tmp_path / "out"
    assert main(["paper-tables", "--results", str(results), "--out", str(out), "--claims", str(claims)]) == 0
    df = pd.read_csv(out / "paper-tables" / "claims.csv")
    verdicts = {(r.method, r.metric): r.condition_verdict for r in df.itertuples()}
    assert set(df["method"]) == {"mock", "mock@broken"}  # mock@teacher excluded by variant_regex
    assert verdicts[("mock@broken", "success_diff_pp")] == "not_reproduced"  # about -50 pp on shared episodes
    broken = df[df.method == "mock@broken"]
    assert set(broken["verdict"]) == {"not_reproduced"}
    assert all("reproduced on vla-bench reference teacher (mock@teacher)" == x for x in df["label"])
    html = (out / "paper-tables" / "index.html").read_text()
    assert "not reproduced" in html and "NOT reportable (smoke)" in html
    md = (out / "paper-tables" / "claims.md").read_text()
    card = next(line for line in md.splitlines() if "— mock@broken," in line)
    assert card.startswith("- Mock paper: faster, no success drop — mock@broken, reproduced on vla-bench reference "
                           "teacher (mock@teacher) on mock-v1 [smoke, NOT reportable]: ")
    assert card.endswith(": not reproduced") and " pp [" in card


def test_claim_whose_variant_matches_no_run_says_why(results, tmp_path):
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump([{
        "id": "mock-vl", "method": "mock", "paper": "Mock paper", "claim": "language mode is fast",
        "suites": ["mock"], "variant_regex": "lang", "conditions": [{"metric": "speedup", "op": ">", "value": 1.0}]}]))
    out = tmp_path / "out"
    assert main(["paper-tables", "--results", str(results), "--out", str(out), "--claims", str(claims)]) == 0
    df = pd.read_csv(out / "paper-tables" / "claims.csv")
    assert list(df["verdict"]) == ["no_results"]
    assert "runs of mock, mock@broken exist but their variant does not match 'lang'" in df["why"][0]


def test_claim_on_another_benchmark_family_points_to_the_runs_that_exist(results, tmp_path):
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump([{
        "id": "mock-libero", "method": "mock", "paper": "Mock paper", "claim": "fast on LIBERO",
        "suites": ["libero"], "conditions": [{"metric": "speedup", "op": ">", "value": 1.0}]}]))
    out = tmp_path / "out"
    assert main(["paper-tables", "--results", str(results), "--out", str(out), "--claims", str(claims)]) == 0
    df = pd.read_csv(out / "paper-tables" / "claims.csv")
    assert list(df["verdict"]) == ["no_results"]
    assert "no complete run of 'mock' on a libero suite yet (it has complete runs on mock-v1" in df["why"][0]


def test_default_paper_tables_keep_every_published_entry(results, tmp_path):
    entries = yaml.safe_load(DEFAULT_PAPER.read_text())
    assert all(e.get("source") and e.get("confidence") for e in entries)
    out = tmp_path / "out"
    assert main(["paper-tables", "--results", str(results), "--out", str(out)]) == 0
    pub = pd.read_parquet(out / "paper-tables" / "published.parquet")
    assert len(pub) == len(entries) and {"source", "confidence"} <= set(pub.columns)
    claims = yaml.safe_load((DEFAULT_PAPER.parent / "claims.yaml").read_text())
    md = (out / "paper-tables" / "claims.md").read_text()
    for c in claims:
        assert c["claim"] in md, c["id"]
    assert "no results" in md  # no shallow_pi etc. runs in the mock results: said, not invented


def test_exports_match_the_leaderboard(results, site):
    rows = leaderboard(load_results(results), "mock-v1")
    csv = pd.read_csv(site / "exports" / "leaderboard-mock-v1.csv")
    pq = pd.read_parquet(site / "exports" / "leaderboard-mock-v1.parquet")
    assert list(csv["method"]) == [r["method"] for r in rows] == list(pq["method"])
    assert csv["success_rate"].tolist() == pytest.approx([r["success_rate"] for r in rows])
    md = (site / "exports" / "leaderboard-mock-v1.md").read_text()
    assert md.count("\n| ") == len(rows) + 1 and "(projected)" in md
    per_task = pd.read_csv(site / "exports" / "per-task-mock-v1.csv")
    assert set(per_task["task"]) == {"red", "green", "blue"}


def test_report_usage_errors(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert f"'{tmp_path / 'missing'}' does not exist" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no runs" in capsys.readouterr().err


def test_bad_claims_file_names_the_value(results, tmp_path, capsys):
    claims = tmp_path / "claims.yaml"
    claims.write_text(yaml.safe_dump([{"id": "x", "method": "mock", "paper": "p", "claim": "c", "suites": ["mock"],
                                       "conditions": [{"metric": "speeed", "op": ">", "value": 1}]}]))
    assert main(["paper-tables", "--results", str(results), "--out", str(tmp_path / "o"),
                 "--claims", str(claims)]) == 2
    assert "unknown metric 'speeed'" in capsys.readouterr().err


def test_unreadable_run_is_listed_not_fatal(results, tmp_path):
    root = tmp_path / "results"
    shutil.copytree(results, root)
    (bad,) = root.glob("mock-v1/expert/*/")
    (bad / "metrics.json").write_text(json.dumps({"schema_version": 1}))
    out = tmp_path / "site"
    assert main(["report", "--results", str(root), "--out", str(out)]) == 0
    html = (out / "index.html").read_text()
    assert "Unreadable runs" in html and "missing field" in html


# --------------------------------------------------------------------------------------------------
# headless Chromium
# --------------------------------------------------------------------------------------------------
def _chromium():
    from reports.browser import BrowserUnavailable, find_chromium

    try:
        return find_chromium()
    except BrowserUnavailable as e:
        pytest.skip(f"{e} — run scripts/install_chromium.sh to enable the browser test")


@pytest.mark.browser
def test_pages_in_headless_chromium(site):
    binary = _chromium()
    pytest.importorskip("websockets.sync.client", reason="the websockets package drives Chromium's DevTools")
    from reports.browser import open_page

    pages = sorted(site.rglob("*.html"))
    with open_page(binary) as page:
        for p in pages:
            page.goto(p.as_uri())
            assert page.errors == [], (p.name, page.errors)
            assert page.eval("window.__pwned === undefined"), p.name
        page.goto((site / "suite-mock-v1.html").as_uri())
        assert page.eval("window.vlaBenchSortReady") is True
        col = page.eval("Array.from(document.querySelectorAll('#leaderboard thead th'))"
                        ".findIndex(th => th.textContent.trim() === 'success')")
        read = ("Array.from(document.querySelectorAll('#leaderboard tbody tr'))"
                f".map(r => Number(r.cells[{col}].getAttribute('data-v')))")
        page.eval(f"document.querySelectorAll('#leaderboard thead th')[{col}].click()")
        asc = page.eval(read)
        assert asc == sorted(asc) and len(asc) == len(METHODS)
        page.eval(f"document.querySelectorAll('#leaderboard thead th')[{col}].click()")
        assert page.eval(read) == sorted(asc, reverse=True)
        boxes = page.eval("Array.from(document.querySelectorAll('svg.plot')).map(s => {"
                          "const b = s.getBoundingClientRect(); return [b.width, b.height,"
                          " s.querySelectorAll('path, use').length]; })")
        assert len(boxes) == 3 and all(w > 200 and h > 150 and n > 5 for w, h, n in boxes), boxes
        labels = page.eval("Array.from(document.querySelectorAll('svg.plot text')).map(t => t.textContent)")
        assert any("mock@broken" in t for t in labels)


@pytest.mark.browser
def test_pages_dump_dom_without_devtools(site):
    """The dependency-light check (no websockets): scripts ran, plots are in the DOM, nothing hit the console."""
    binary = _chromium()
    from reports.browser import dump_dom

    doms = {}
    for name in ("index.html", "suite-mock-v1.html", "paper-tables/index.html"):
        doms[name], console = dump_dom(binary, site / name)
        assert console == [], (name, console)
        assert 'data-sort-ready="1"' in doms[name], name
    dom = doms["suite-mock-v1.html"]
    assert dom.count('<svg class="plot"') == 3 and "<script>window.__pwned" not in dom


@pytest.mark.browser
def test_report_screenshot_writes_a_png(site, tmp_path, capsys):
    _chromium()
    out = tmp_path / "report.png"
    assert main(["report-screenshot", "--site", str(site), "--out", str(out), "--width", "800",
                 "--height", "600"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_student_pairs_with_the_run_of_its_own_teacher_weights(results, tmp_path):
    """A retrained teacher's new run must not be paired with students distilled from the old teacher."""
    from reports.loader import load_results
    from reports.tables import teacher_run

    root = tmp_path / "results"
    shutil.copytree(results, root)
    (old_t,) = root.glob("mock-v1/mock@teacher/*/")
    new_t = old_t.with_name("smoke-retrained")
    shutil.copytree(old_t, new_t)
    for path, weights, stamp in ((old_t, "aaaaaaaaaaaa", "2000-01-01T00:00:00+00:00"),
                                 (new_t, "bbbbbbbbbbbb", "2999-01-01T00:00:00+00:00")):
        run = json.loads((path / "run.json").read_text())
        run.update(run_id=path.name, weights_sha256_12=weights, started_at=stamp)
        (path / "run.json").write_text(json.dumps(run))
        m = json.loads((path / "metrics.json").read_text())
        m.update(run_id=path.name, updated_at=stamp)
        (path / "metrics.json").write_text(json.dumps(m))
    (student,) = root.glob("mock-v1/mock@broken/*/")
    run = json.loads((student / "run.json").read_text())

    def paired(**fields):
        (student / "run.json").write_text(json.dumps({**run, **fields}))
        res = load_results(root)
        (s,) = [r for r in res.runs if r.method == "mock@broken"]
        t = teacher_run(res, s)
        return t.run_id if t else None

    assert paired(teacher_weights_sha256_12="aaaaaaaaaaaa") == old_t.name  # not the newer retrained run
    assert paired(teacher_weights_sha256_12="bbbbbbbbbbbb") == "smoke-retrained"
    assert paired(teacher_weights_sha256_12="cccccccccccc") is None  # its teacher has no run: no pairing
    # runs from before the field: the teacher run that existed when the student started
    legacy = {k: v for k, v in run.items() if k != "teacher_weights_sha256_12"}
    (student / "run.json").write_text(json.dumps({**legacy, "started_at": "2500-01-01T00:00:00+00:00"}))
    res = load_results(root)
    (s,) = [r for r in res.runs if r.method == "mock@broken"]
    assert teacher_run(res, s).run_id == old_t.name


def test_report_renders_the_committed_results(tmp_path):
    """The repository's own results/ (every committed run, claim card and paper table) renders: a claim card
    without conditions once crashed it (pandas >= 3 turned its None verdict into a truthy NaN)."""
    root = Path(__file__).resolve().parents[1] / "results"
    out = tmp_path / "site"
    assert main(["report", "--results", str(root), "--out", str(out)]) == 0
    claims = (out / "paper-tables" / "claims.md").read_text()
    assert "| nan" not in claims and "nan |" not in claims
    assert (out / "index.html").exists()
