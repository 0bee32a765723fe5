import json

import pytest

from harness.results.schema import SchemaError, validate_metrics
from harness.results.store import RunDir
from harness.runner import run
from harness.specs import RunSpec
from harness.stats import mcnemar_exact, paired_difference, wilson


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("r")
    return run(RunSpec(method="mock", suite="mock-v1", profile="smoke", results=str(tmp), profile_calls=10),
               progress=False, log=lambda s: None)


def test_round_trip(run_dir):
    m = run_dir.read_metrics()
    again = json.loads(json.dumps(m))
    assert validate_metrics(again) == m


@pytest.mark.parametrize("field,value,needle", [
    ("success_rate", "high", "success_rate"),
    ("success_rate", 1.5, "outside"),
    ("reportable", "yes", "reportable"),
    ("success_ci95", [0.1], "success_ci95"),
])
def test_invalid_metrics_name_the_field(run_dir, field, value, needle):
    m = run_dir.read_metrics()
    m[field] = value
    with pytest.raises(SchemaError, match=needle):
        validate_metrics(m)


def test_missing_field_named(run_dir):
    m = run_dir.read_metrics()
    del m["n_episodes"]
    with pytest.raises(SchemaError, match="n_episodes"):
        validate_metrics(m)


def test_newer_schema_refused(run_dir):
    m = run_dir.read_metrics()
    m["schema_version"] = 99
    with pytest.raises(SchemaError, match="newer"):
        validate_metrics(m)


def test_bad_episode_line_rejected(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(SchemaError, match="success"):
        rd.append_episode({"episode_id": "a", "task": "t", "trial": 0, "seed": 1, "success": "yes", "steps": 1,
                           "error": None})


def test_wilson_known_values():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_paired_stats():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2**10)
    d = paired_difference([True] * 20, [False] * 20)
    assert d["diff"] == -1.0 and d["b"] == 20 and d["p_mcnemar"] < 1e-5
