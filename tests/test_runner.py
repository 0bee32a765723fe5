import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.interfaces import derive_seed
from harness.plugins import make_suite
from harness.results.store import RunDir, iter_runs
from harness.runner import run
from harness.specs import RunSpec

ROOT = Path(__file__).resolve().parent.parent


def _run(tmp_path, method="mock", profile="quick", **kw):
    spec = RunSpec(method=method, suite="mock-v1", profile=profile, results=str(tmp_path), profile_calls=10,
                   **kw)
    return run(spec, progress=False, log=lambda s: None)


def test_three_files_with_every_field(tmp_path):
    rd = _run(tmp_path)
    run_json, m = rd.read_run(), rd.read_metrics()
    eps = rd.read_episodes()
    for key in ("git_commit", "git_dirty", "packages", "config_hash", "host", "threads", "python"):
        assert key in run_json["provenance"]
    assert run_json["started_at"] and run_json["finished_at"]
    for key in ("episode_id", "task", "trial", "seed", "success", "steps", "error"):
        assert all(key in e for e in eps)
    assert m["n_episodes"] == len(eps) == 24
    assert m["reportable"] is False and m["profile"] == "quick"
    assert set(m["per_task"]) == {"red", "green", "blue"}
    assert m["gflops_per_call"] > 0 and m["gflops_per_action"] == pytest.approx(m["gflops_per_call"] / 2)
    assert set(m["latency_ms"]) >= {"p50", "p90", "p99", "mean"} and m["cpu_ms"]["p50"] > 0
    assert m["params"] > 0 and m["threads"] == 1 and m["device"] == "cpu"
    assert m["vs_teacher"]["teacher"] == "reference"
    assert m["vs_teacher"]["flops_ratio"] < 1 and m["vs_teacher"]["speedup"] > 0
    lo, hi = m["success_ci95"]
    assert lo <= m["success_rate"] <= hi


def test_mock_succeeds_and_broken_fails_measurably(tmp_path):
    good = _run(tmp_path).read_metrics()
    bad = _run(tmp_path, "mock@broken").read_metrics()
    assert good["success_rate"] >= 0.8
    assert bad["success_rate"] <= 0.5
    assert bad["success_ci95"][1] < good["success_ci95"][0]  # separated intervals


def test_rerun_adds_no_episode(tmp_path):
    rd = _run(tmp_path, skip_profile=True)
    before = rd.episodes_jsonl.read_text()
    rd2 = _run(tmp_path, skip_profile=True)
    assert rd2.path == rd.path
    assert rd2.episodes_jsonl.read_text() == before
    assert len(list(iter_runs(tmp_path))) == 1


def test_seeds_derived_from_suite_task_trial():
    suite = make_suite("mock-v1")
    eps = suite.episodes("quick")
    assert eps[0].seed == derive_seed("mock-v1", eps[0].task.name, eps[0].trial)
    assert len({e.seed for e in eps}) == len(eps)
    assert [e.episode_id for e in suite.episodes("quick")] == [e.episode_id for e in eps]


@pytest.mark.parametrize("variant,needle", [("nan", "NaN"), ("wrong_shape", "shape"), ("raise", "injected")])
def test_bad_policy_fails_episode_and_run_goes_on(tmp_path, variant, needle):
    rd = _run(tmp_path, f"mock@{variant}", skip_profile=True)
    eps = rd.read_episodes()
    assert len(eps) == 24  # every episode ran
    errs = [e for e in eps if e["error"]]
    assert errs and all(not e["success"] for e in errs)
    assert needle in errs[0]["error"]
    assert rd.read_metrics()["n_errors"] == len(errs)


def test_step_limit(tmp_path):
    rd = _run(tmp_path, "mock@broken", skip_profile=True)
    assert max(e["steps"] for e in rd.read_episodes()) <= 25


def test_episode_timeout(tmp_path):
    rd = run(RunSpec(method="mock", suite="mock-v1", profile="smoke", results=str(tmp_path), skip_profile=True,
                     overrides=(("delay_s", 0.02),), episode_timeout_s=0.05), progress=False, log=lambda s: None)
    eps = rd.read_episodes()
    errors = [e["error"] for e in eps if e["error"]]
    assert errors and all(err.startswith("timeout") for err in errors)
    # 0.02 s per call, 2 actions per call: the limit is checked before every call
    assert max(e["steps"] for e in eps) <= 2 * (0.05 / 0.02 + 2)


def test_worker_count_invariance(tmp_path):
    slow = (("delay_s", 0.01),)  # long enough that both workers take episodes
    one = _run(tmp_path / "w1", skip_profile=True, overrides=slow).read_episodes()
    two = _run(tmp_path / "w2", skip_profile=True, workers=2, overrides=slow).read_episodes()
    key = lambda e: (e["episode_id"], e["success"], e["steps"], e["seed"], json.dumps(e["metrics"], sort_keys=True))
    assert sorted(map(key, one)) == sorted(map(key, two))
    assert {e["worker"] for e in two} == {1, 2}


def test_resume_after_kill9(tmp_path):
    cmd = [sys.executable, "-m", "harness", "bench", "--method", "mock", "--suite", "mock-v1", "--profile", "quick",
           "--results", str(tmp_path), "--set", "delay_s=0.01", "--no-profile", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 60
    jsonl = None
    while time.time() < deadline:
        found = list(Path(tmp_path).glob("mock-v1/mock@*/*/episodes.jsonl")) + \
            list(Path(tmp_path).glob("mock-v1/mock/*/episodes.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 5:
            jsonl = found[0]
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert jsonl is not None, "the run never wrote 5 episodes"
    n_before = len(jsonl.read_text().splitlines())
    assert n_before < 24, "the run finished before it could be killed; slow it down"
    with open(jsonl, "a") as f:  # simulate a write torn by the kill
        f.write('{"episode_id": "red/0')
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rd = RunDir(jsonl.parent)
    eps = rd.read_episodes()
    ids = [e["episode_id"] for e in eps]
    assert len(ids) == len(set(ids)) == 24
    assert rd.read_metrics()["complete"] is True
    assert "resumes" in rd.read_run()


def test_unavailable_suite_stops_the_run(tmp_path, monkeypatch, capsys):
    from harness.cli import main
    from harness.interfaces import SuiteUnavailableError
    from suites._mock.suite import MockSuite

    def unavailable(self, task, **kw):
        raise SuiteUnavailableError("assets absent: copy them to MS_ASSET_DIR")

    monkeypatch.setattr(MockSuite, "make_env", unavailable)
    rc = main(["bench", "--method", "expert", "--suite", "mock-v1", "--results", str(tmp_path), "--quiet"])
    assert rc == 2 and "MS_ASSET_DIR" in capsys.readouterr().err
    assert not list(tmp_path.glob("*/*/*/episodes.jsonl"))  # no run of n failed episodes was written
