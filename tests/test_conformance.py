"""Conformance of every registered suite and method: a new plug-in is tested the moment it is registered.

Suites whose extra is not installed are skipped with the reason; everything else must pass.
"""
import inspect
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from harness.interfaces import PROFILES, ActionChunk, Method, Policy, Suite, SuiteUnavailableError
from harness.plugins import METHODS, SUITES, make_method, make_suite
from harness.runner import run, run_episode
from harness.specs import RunSpec

METHOD_FILES = ("plugin.py", "config.py", "adapter.py", "configs/default.yaml", "configs/debug.yaml", "README.md")
SUITE_FILES = ("plugin.py", "suite.py", "protocol.yaml", "README.md")


def _suite_or_skip(suite_id: str) -> Suite:
    try:
        return make_suite(suite_id)
    except ImportError as e:
        pytest.skip(f"suite {suite_id}: extra not installed ({e})")


@pytest.fixture(scope="module", params=SUITES.names())
def suite(request) -> Suite:
    return _suite_or_skip(request.param)


def _skip_if_unavailable(suite: Suite) -> None:
    """A suite may report (optional ``unavailable() -> str | None``) that its assets are not on this machine."""
    why = getattr(suite, "unavailable", lambda: None)()
    if why:
        pytest.skip(f"suite {suite.suite_id}: {why}")


def _env_or_skip(suite: Suite, task, **options):
    """make_env, skipping (with the suite's message) when it raises SuiteUnavailableError (e.g. assets absent)."""
    try:
        return suite.make_env(task, **options)
    except SuiteUnavailableError as e:
        pytest.skip(f"suite {suite.suite_id}: {e}")


def test_suite_folder_layout(suite):
    folder = Path(inspect.getfile(type(suite))).parent
    missing = [f for f in SUITE_FILES if not (folder / f).exists()]
    assert not missing, f"{folder} lacks {missing}"
    assert suite.protocol, "protocol.yaml is empty"


def test_suite_profiles_and_episodes(suite):
    profiles = suite.profiles()
    assert set(PROFILES) <= set(profiles)
    assert profiles["full"].reportable and not profiles["quick"].reportable and not profiles["smoke"].reportable
    sizes = {}
    for name in PROFILES:
        eps = suite.episodes(name)
        assert eps, f"profile {name} has no episodes"
        ids = [e.episode_id for e in eps]
        assert len(ids) == len(set(ids)), f"duplicate episode ids in {name}"
        assert [e.seed for e in suite.episodes(name)] == [e.seed for e in eps], "seeds must be deterministic"
        assert all(e.max_steps > 0 for e in eps)
        sizes[name] = len(eps)
    assert sizes["smoke"] <= sizes["quick"] <= sizes["full"]
    names = {t.name for t in suite.tasks()}
    assert len(names) == len(suite.tasks()), "task names must be unique"
    assert all(t.instruction for t in suite.tasks()), "every task has an instruction"


def _check_obs(obs: dict, suite: Suite, privileged: bool) -> None:
    assert isinstance(obs["instruction"], str) and obs["instruction"]
    images = obs["images"]
    assert images, "at least one camera"
    for cam, img in images.items():
        assert isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, cam
    assert np.asarray(obs["proprio"]).dtype == np.float32
    assert ("privileged" in obs) == privileged


def test_suite_env_contract(suite):
    _skip_if_unavailable(suite)
    ep = suite.episodes("smoke")[0]
    env = suite.make_env(ep.task, privileged=False)
    try:
        assert isinstance(env.action_space, gym.spaces.Box)
        obs, info = env.reset(seed=ep.seed, options={"episode": ep})
        _check_obs(obs, suite, privileged=False)
        rng = np.random.default_rng(0)
        a = rng.uniform(env.action_space.low, env.action_space.high).astype(env.action_space.dtype)
        out = env.step(a)
        assert len(out) == 5, "Gymnasium step API: obs, reward, terminated, truncated, info"
        assert isinstance(out[4].get("success"), (bool, np.bool_))
        _check_obs(out[0], suite, privileged=False)
    finally:
        env.close()


def test_suite_expert_runs_one_episode(suite):
    try:
        expert = suite.expert()
    except NotImplementedError:
        pytest.skip(f"{suite.suite_id} has no scripted expert")
    _skip_if_unavailable(suite)
    ep = suite.episodes("smoke")[0]
    env = _env_or_skip(suite, ep.task, privileged=True)
    try:
        result, _ = run_episode(env, expert, ep, privileged=True, timeout_s=600)
    finally:
        env.close()
    assert result.error is None, result.error
    assert result.steps > 0


# ----- methods -----
@pytest.fixture(scope="module", params=METHODS.names())
def method(request) -> Method:
    return make_method(request.param)


def test_method_folder_layout(method):
    folder = Path(inspect.getfile(type(method))).parent
    missing = [f for f in METHOD_FILES if not (folder / f).exists()]
    assert not missing, f"{folder} lacks {missing}"


def test_method_configs_and_variants(method):
    suite_id = method.conformance_suite
    for debug in (False, True):
        method.config(suite_id, debug=debug)
    for variant in method.variants:
        m = make_method(f"{method.name}@{variant}")
        m.config(suite_id, debug=True)


def test_method_distills_and_runs(method, tmp_path):
    suite = _suite_or_skip(method.conformance_suite)
    rd = run(RunSpec(method=method.name, suite=suite.suite_id, profile="smoke", results=str(tmp_path), debug=True,
                     limit=1, skip_profile=True, cache_dir=str(tmp_path / "cache")), progress=False,
             log=lambda s: None)
    eps = rd.read_episodes()
    assert len(eps) == 1 and eps[0]["error"] is None, eps
    assert eps[0]["steps"] > 0


def test_policy_interface(method, tmp_path):
    from harness.runner import build_policy

    suite = _suite_or_skip(method.conformance_suite)
    if method.privileged:
        pytest.skip("privileged expert: checked by test_suite_expert_runs_one_episode")
    built = build_policy(RunSpec(method=method.name, suite=suite.suite_id, debug=True,
                                 cache_dir=str(tmp_path / "cache")), suite=suite)
    assert isinstance(built.policy, Policy)
    ep = suite.episodes("smoke")[0]
    env = suite.make_env(ep.task)
    try:
        obs, _ = env.reset(seed=ep.seed, options={"episode": ep})
        built.policy.reset(ep.task, ep.seed)
        chunk = built.policy.infer(obs)
        assert isinstance(chunk, ActionChunk)
        assert chunk.actions.ndim == 2 and chunk.actions.shape[1:] == env.action_space.shape
        assert np.isfinite(chunk.actions).all()
        built.policy.reset(ep.task, ep.seed)  # same seed and obs -> same actions
        again = built.policy.infer(obs)
        np.testing.assert_allclose(chunk.actions, again.actions, rtol=1e-5, atol=1e-6)
    finally:
        env.close()
