"""The CI regression gate (reports/gate.py): recomputes success from episodes.jsonl, pairs episodes by id,
fails on a significant success drop (exact McNemar) or a speedup / FLOPs-ratio regression beyond tolerance."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mock_results(tmp_path_factory) -> Path:
    """A fresh mock-v1 / mock / quick run (24 episodes, seconds), profiled against the tiny ``mock@teacher``
    rather than the suite's trained reference teacher (~0.2 s per call) to keep the tests fast; the gate's
    logic does not depend on which teacher a run names (.ci/gate.sh runs the real suite teacher)."""
    from suites._mock.suite import MockSuite

    out = tmp_path_factory.mktemp("gate") / "base"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MockSuite, "teacher", "mock@teacher")
        assert main(["bench", "--method", "mock", "--suite", "mock-v1", "--profile", "quick", "--results",
                     str(out), "--quiet"]) == 0
    return out


def _run_dir(root: Path) -> Path:
    (run_json,) = root.glob("*/*/*/run.json")
    return run_json.parent


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return _run_dir(dst)


def _rewrite_episodes(run: Path, fn) -> None:
    lines = [json.loads(x) for x in (run / "episodes.jsonl").read_text().splitlines() if x.strip()]
    (run / "episodes.jsonl").write_text("".join(json.dumps(fn(e)) + "\n" for e in lines))


def _edit_metrics(run: Path, fn) -> None:
    m = json.loads((run / "metrics.json").read_text())
    fn(m)
    (run / "metrics.json").write_text(json.dumps(m))


def _gate(capsys, base: Path, cand: Path, *extra: str) -> tuple[int, str]:
    code = main(["gate", "--baseline", str(base), "--candidate", str(cand), *extra])
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def test_gate_passes_a_run_against_itself(mock_results, capsys):
    code, out = _gate(capsys, mock_results, mock_results)
    assert code == 0, out
    assert "gate PASSED: 1 compared, 0 failing checks" in out
    assert "mock-v1  mock" in out and "+0.0 (n=24)" in out  # the diff table is printed on success too


def test_gate_fails_when_successes_become_failures(mock_results, tmp_path, capsys):
    cand = _copy(mock_results, tmp_path / "cand")
    n_success = sum(json.loads(x)["success"] for x in (cand / "episodes.jsonl").read_text().splitlines())
    assert n_success >= 10  # enough discordant pairs for McNemar to be significant
    _rewrite_episodes(cand, lambda e: {**e, "success": False})
    code, out = _gate(capsys, mock_results, tmp_path / "cand")
    assert code == 1, out
    assert "FAIL mock-v1/mock/quick success" in out
    assert f"lost {n_success}, gained 0" in out
    assert "gate FAILED" in out


@pytest.mark.skipif(shutil.which("make") is None, reason="make not available")
def test_make_gate_passes_itself_and_fails_a_copy_with_successes_turned_to_failures(mock_results, tmp_path):
    """The Makefile target end to end (``-o setup``: the venv is already set up; no pip run in a test)."""
    def make_gate(cand: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "--no-print-directory", "-o", "setup", "gate", f"BASELINE={mock_results}",
                               f"CANDIDATE={cand}"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)

    ok = make_gate(mock_results)
    assert ok.returncode == 0 and "gate PASSED" in ok.stdout, ok.stdout + ok.stderr
    cand = _copy(mock_results, tmp_path / "cand")
    _rewrite_episodes(cand, lambda e: {**e, "success": False})
    bad = make_gate(tmp_path / "cand")
    assert bad.returncode != 0 and "gate FAILED" in bad.stdout, bad.stdout + bad.stderr


def test_gate_reads_episodes_not_metrics_json(mock_results, tmp_path, capsys):
    cand = _copy(mock_results, tmp_path / "cand")

    def zero(m):
        m["success_rate"], m["success_ci95"] = 0.0, [0.0, 0.1]

    _edit_metrics(cand, zero)  # metrics.json claims every episode failed; the episodes say otherwise
    code, out = _gate(capsys, mock_results, tmp_path / "cand")
    assert code == 0, out


def test_a_single_lost_episode_is_within_noise(mock_results, tmp_path, capsys):
    cand = _copy(mock_results, tmp_path / "cand")
    first_success = next(json.loads(x)["episode_id"] for x in (cand / "episodes.jsonl").read_text().splitlines()
                         if json.loads(x)["success"])
    _rewrite_episodes(cand, lambda e: {**e, "success": False} if e["episode_id"] == first_success else e)
    code, out = _gate(capsys, mock_results, tmp_path / "cand")
    assert code == 0, out
    assert "lost 1, gained 0; McNemar p=1" in out


def test_gate_fails_on_flops_ratio_and_speedup_regressions(mock_results, tmp_path, capsys):
    base_metrics = json.loads((_run_dir(mock_results) / "metrics.json").read_text())
    fr, sp = base_metrics["vs_teacher"]["flops_ratio"], base_metrics["vs_teacher"]["speedup"]

    cand = _copy(mock_results, tmp_path / "flops")
    _edit_metrics(cand, lambda m: m["vs_teacher"].update(flops_ratio=fr * 1.10))
    code, out = _gate(capsys, mock_results, tmp_path / "flops")
    assert code == 1 and "FAIL mock-v1/mock/quick flops_ratio" in out, out

    cand = _copy(mock_results, tmp_path / "slow")
    _edit_metrics(cand, lambda m: m["vs_teacher"].update(speedup=sp * 0.5))
    code, out = _gate(capsys, mock_results, tmp_path / "slow")
    assert code == 1 and "FAIL mock-v1/mock/quick speedup" in out, out
    code, out = _gate(capsys, mock_results, tmp_path / "slow", "--latency-tol", "0.6")
    assert code == 0, out  # the same slowdown is inside a 60% tolerance

    cand = _copy(mock_results, tmp_path / "cpu")
    cpu = base_metrics["vs_teacher"]["cpu_speedup"]
    _edit_metrics(cand, lambda m: m["vs_teacher"].update(cpu_speedup=cpu * 0.3))
    code, out = _gate(capsys, mock_results, tmp_path / "cpu", "--latency-tol", "0.9", "--cpu-tol", "0.5")
    assert code == 1 and "FAIL mock-v1/mock/quick cpu_speedup" in out and "tolerance 50%" in out, out


def test_ratios_against_a_different_teacher_are_not_compared(mock_results, tmp_path, capsys):
    cand = _copy(mock_results, tmp_path / "cand")
    _edit_metrics(cand, lambda m: m["vs_teacher"].update(teacher="some-other-teacher"))
    code, out = _gate(capsys, mock_results, tmp_path / "cand")
    assert code == 1 and "teacher changed" in out and "some-other-teacher" in out, out


def test_disjoint_episode_ids_cannot_pass(mock_results, tmp_path, capsys):
    cand = _copy(mock_results, tmp_path / "cand")
    _rewrite_episodes(cand, lambda e: {**e, "episode_id": "other/" + e["episode_id"]})
    code, out = _gate(capsys, mock_results, tmp_path / "cand")
    assert code == 1 and "no shared episode ids" in out, out


def test_nothing_in_common_fails(mock_results, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(mock_results, other)
    (mock_dir,) = other.glob("*/mock")
    mock_dir.rename(mock_dir.with_name("mock@renamed"))
    for m in other.glob("*/*/*/metrics.json"):
        _edit_metrics(m.parent, lambda d: d.update(method="mock@renamed"))
    code, out = _gate(capsys, mock_results, other)
    assert code == 1 and "no (suite, method, profile) is present in both" in out, out


@pytest.mark.parametrize("args, needle", [
    (["--baseline", "/nonexistent/base"], "'/nonexistent/base' does not exist"),
    (["--latency-tol", "1.5"], "latency tolerance must be in [0, 1), got 1.5"),
    (["--alpha", "0"], "alpha must be in (0, 1), got 0.0"),
])
def test_usage_errors_exit_2_and_name_the_value(mock_results, capsys, args, needle):
    argv = ["gate", "--baseline", str(mock_results), "--candidate", str(mock_results)]
    for flag, value in zip(args[::2], args[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err


def test_malformed_candidate_file_is_a_usage_error(mock_results, tmp_path, capsys):
    cand = _copy(mock_results, tmp_path / "cand")
    with open(cand / "episodes.jsonl", "a") as f:
        f.write('{"episode_id": "x", "success": "yes"}\n')
    code = main(["gate", "--baseline", str(mock_results), "--candidate", str(tmp_path / "cand")])
    err = capsys.readouterr().err
    assert code == 2 and "episodes.jsonl" in err, err


def test_ci_baseline_is_a_valid_committed_mock_run():
    base = ROOT / "results" / "ci-baseline"
    runs = list(base.glob("*/*/*/run.json"))
    assert [r.parent.parent.name for r in runs] == ["mock"], runs
    m = json.loads((runs[0].parent / "metrics.json").read_text())
    assert m["complete"] and m["suite"] == "mock-v1" and m["profile"] == "quick"
    assert m["vs_teacher"]["speedup"] > 1 and m["vs_teacher"]["flops_ratio"] < 1


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not available")
def test_ci_gate_script_passes_a_fresh_mock_run():
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "gate.sh")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate PASSED" in proc.stdout
