"""The driving suite (highway-env): metric formulas, determinism, instruction following, obs/action contract,
and a smoke run through the runner. Needs the driving extra; whole file well under 2 minutes."""
import json

import numpy as np
import pytest

pytest.importorskip("highway_env")
pytestmark = pytest.mark.driving

from harness.plugins import make_suite  # noqa: E402
from harness.runner import run  # noqa: E402
from harness.specs import RunSpec  # noqa: E402
from suites.driving import metrics as M  # noqa: E402

PEN = {"vehicle_collision": 0.6, "static_collision": 0.65, "timeout_blocked": 0.7, "wrong_speed": 0.7,
       "off_road": 1.0, "wrong_route": 1.0}


# ----- metric formulas on hand-built cases
def test_driving_score_formula():
    assert M.driving_score(100.0, {}, PEN) == 100.0
    assert M.driving_score(80.0, {"vehicle_collision": 1}, PEN) == pytest.approx(48.0)
    assert M.driving_score(50.0, {"vehicle_collision": 2, "timeout_blocked": 1}, PEN) == pytest.approx(50 * 0.36 * 0.7)
    assert M.driving_score(60.0, {"wrong_route": 1}, PEN) == pytest.approx(60.0)
    with pytest.raises(ValueError, match="route_completion"):
        M.driving_score(120.0, {}, PEN)
    with pytest.raises(KeyError, match="red_light"):
        M.driving_score(50.0, {"red_light": 1}, PEN)


def test_pdms_formula_and_windows():
    assert M.pdms(1, 1, 1, 1, 1) == pytest.approx(1.0)
    assert M.pdms(0, 1, 1, 1, 1) == 0.0
    assert M.pdms(1, 1, 0, 1, 1) == pytest.approx(7 / 12)
    assert M.pdms(1, 1, 1, 0.5, 0) == pytest.approx((5 + 2.5) / 12)
    assert M.pdms(0.5, 1, 1, 1, 1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="ep"):
        M.pdms(1, 1, 1, 1.5, 1)
    ok = np.array([True] * 40 + [True] * 39 + [False] + [True] * 10)
    assert M.window_score(ok, 40) == pytest.approx(2 / 3)
    assert M.window_score(np.array([], bool), 40) == 1.0


def test_comfort_flags():
    thr = {"min_lon_accel": -4.05, "max_lon_accel": 2.40, "max_abs_lat_accel": 4.89, "max_abs_yaw_rate": 0.95,
           "max_abs_yaw_accel": 1.93, "max_abs_lon_jerk": 4.13, "max_abs_mag_jerk": 8.37}
    dt = 0.1
    assert M.comfort_flags(np.full(50, 20.0), np.zeros(50), dt, thr).all()  # cruising straight
    v = np.concatenate([np.full(20, 20.0), 20.0 - 8.0 * dt * np.arange(1, 21), np.full(10, 4.0)])
    assert not M.comfort_flags(v, np.zeros(50), dt, thr).all()  # braking at 8 m/s^2
    h = np.cumsum(np.full(50, 1.5 * dt))  # 1.5 rad/s yaw rate > 0.95
    assert not M.comfort_flags(np.full(50, 5.0), h, dt, thr)[5:45].any()


def test_episode_metrics_terms():
    params = {"penalties": PEN, "pdms_window_s": 4.0, "comfort": {
        "min_lon_accel": -4.05, "max_lon_accel": 2.40, "max_abs_lat_accel": 4.89, "max_abs_yaw_rate": 0.95,
        "max_abs_yaw_accel": 1.93, "max_abs_lon_jerk": 4.13, "max_abs_mag_jerk": 8.37}}
    base = dict(ttc_ok=np.ones(80, bool), speed=np.full(80, 10.0), heading=np.zeros(80), dt=0.1, params=params)
    m = M.episode_metrics(route_completion=100.0, infractions={}, at_fault_vehicle_collision=False,
                          static_collision=False, ever_off_road=False, **base)
    assert m["driving_score"] == 100.0 and m["pdms"] == pytest.approx(100.0)
    m = M.episode_metrics(route_completion=50.0, infractions={"vehicle_collision": 1}, at_fault_vehicle_collision=True,
                          static_collision=False, ever_off_road=False, **base)
    assert m["driving_score"] == pytest.approx(30.0) and m["nc"] == 0.0 and m["pdms"] == 0.0
    m = M.episode_metrics(route_completion=100.0, infractions={}, at_fault_vehicle_collision=False,
                          static_collision=True, ever_off_road=False, **base)
    assert m["nc"] == 0.5 and m["pdms"] == pytest.approx(50.0)


def test_aggregate_labels_simulator():
    rows = [{"scenario": "merge", "success": True, "outcome": "success", "driving_score": 100.0, "route_completion": 100.0,
             "pdms": 100.0, "infractions": {}},
            {"scenario": "highway", "success": False, "outcome": "wrong_route", "driving_score": 40.0,
             "route_completion": 40.0, "pdms": 70.0, "infractions": {"wrong_route": 1}}]
    agg = M.aggregate(rows)
    assert agg["simulator"] == "highway-env" and "(highway-env)" in agg["labels"]["pdms"]
    assert agg["success_rate"] == 0.5 and agg["driving_score"] == 70.0
    assert agg["infractions"]["wrong_route"] == 1 and set(agg["per_scenario"]) == {"merge", "highway"}


# ----- env contract, determinism, instruction following
@pytest.fixture(scope="module")
def suite():
    return make_suite("driving")


def _rollout(suite, ep, steps=None, options=None):
    env = suite.make_env(ep.task, privileged=True)
    expert = suite.expert()
    obs, _ = env.reset(seed=ep.seed, options={"episode": ep, **(options or {})})
    expert.reset(ep.task, ep.seed)
    traj = []
    for _ in range(steps or ep.max_steps):
        obs, _, term, trunc, info = env.step(expert.infer(obs).actions[0])
        traj.append((*env.ego.position, env.ego.speed))
        if term or trunc:
            break
    return np.array(traj), env.episode_metrics()


def test_obs_and_action_contract(suite):
    ep = suite.episodes("smoke")[0]
    env = suite.make_env(ep.task)
    obs, info = env.reset(seed=ep.seed, options={"episode": ep})
    img = obs["images"]["topdown"]
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8 and img.std() > 0
    assert obs["proprio"].dtype == np.float32 and obs["proprio"].shape == (6,)
    assert "privileged" not in obs and obs["instruction"] == ep.task.instruction
    assert env.action_space.shape == (16,) and isinstance(info["success"], bool)
    small = suite.make_env(ep.task, camera_size=64, action_mode="control")
    obs, _ = small.reset(seed=ep.seed, options={"episode": ep})
    assert obs["images"]["topdown"].shape == (64, 64, 3) and small.action_space.shape == (2,)
    small.step(np.array([0.2, 0.0], np.float32))
    with pytest.raises(ValueError, match="action_mode"):
        suite.make_env(ep.task, action_mode="discrete")
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))


def test_profiles_sizes_and_seeds(suite):
    full = suite.episodes("full")
    by_scen = {}
    for e in full:
        by_scen[e.task.meta["scenario"]] = by_scen.get(e.task.meta["scenario"], 0) + 1
    assert set(by_scen) == {"intersection", "roundabout", "merge", "highway"} and min(by_scen.values()) >= 50
    assert len(suite.episodes("quick")) >= 20
    one = make_suite("driving_merge-v1")
    assert [e.seed for e in one.episodes("full")] == [e.seed for e in full if e.task.meta["scenario"] == "merge"]


def test_determinism(suite):
    ep = next(e for e in suite.episodes("quick") if e.task.name == "intersection_turn_left")
    a, ma = _rollout(suite, ep, steps=60)
    b, mb = _rollout(suite, ep, steps=60)
    np.testing.assert_array_equal(a, b)
    assert json.dumps(ma, sort_keys=True, default=str) == json.dumps(mb, sort_keys=True, default=str)


@pytest.mark.parametrize("task,wrong", [("intersection_turn_left", "go_straight"),
                                        ("highway_change_left", "change_right")])
def test_wrong_instruction_fails_destination(suite, task, wrong):
    """The expert driving another instruction's route never succeeds, and ends at the wrong exit / lane."""
    eps = [e for e in suite.episodes("quick") if e.task.name == task][:4]
    wrong_params = next(t for t in suite.tasks() if t.meta["key"] == wrong).meta["params"]
    outcomes = []
    for ep in eps:
        _, m = _rollout(suite, ep, options={"route_params": wrong_params})
        assert not m["success"] and m["route_completion"] < 100.0
        outcomes.append(m["outcome"])
    assert "wrong_route" in outcomes and "success" not in outcomes, outcomes
    _, right = _rollout(suite, eps[0])
    assert right["outcome"] != "wrong_route"


def test_smoke_via_runner(tmp_path):
    rd = run(RunSpec(method="expert", suite="driving_highway-v1", profile="smoke", results=str(tmp_path),
                     skip_profile=True, cache_dir=str(tmp_path / "cache")), progress=False, log=lambda s: None)
    eps = rd.read_episodes()
    assert len(eps) == 2 and all(e["error"] is None for e in eps)
    assert all(e["metrics"]["simulator"] == "highway-env" for e in eps)
    sm = rd.read_metrics()["suite_metrics"]
    for key in ("driving_score", "route_completion", "pdms", "nc", "dac", "ttc", "ep", "comfort", "infractions"):
        assert key in sm, key
    assert sm["simulator"] == "highway-env"


def test_lane_indexer_matches_highway_env(suite):
    """The vectorised closest-lane lookup returns exactly highway-env's get_closest_lane_index."""
    from suites.driving.scenarios import LaneIndexer

    rng = np.random.default_rng(0)
    for name in ("intersection_turn_left", "roundabout_exit_1", "merge_merge_keep_right"):
        ep = next(e for e in suite.episodes("quick") if e.task.name == name)
        env = suite.make_env(ep.task)
        env.reset(seed=ep.seed, options={"episode": ep})
        net, ix = env.road.network, LaneIndexer(env.road.network)
        for _ in range(300):
            p, h = rng.uniform([-150, -150], [450, 150]), float(rng.uniform(-4, 4))
            assert ix.closest(p, h) == net.get_closest_lane_index(p, h)
