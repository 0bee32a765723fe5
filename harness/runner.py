"""The runner: resolve a RunSpec into a suite and a policy, roll out the pending episodes, profile the
policy on recorded observations, and write run.json / episodes.jsonl / metrics.json.

Rollouts never time anything but the episode's wall clock; FLOPs and latency are measured afterwards,
outside the rollout loop (``harness.profiling``).
"""
from __future__ import annotations

import math
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.interfaces import ActionChunk, ConfigError, SuiteUnavailableError, DataSource, EpisodeResult, EpisodeSpec, Method, Policy, Suite
from harness.plugins import make_method, make_suite
from harness.results import provenance
from harness.results.store import RunDir
from harness.specs import RunSpec, file_digest
from harness.stats import wilson

NON_REPORTABLE_BANNER = """
################################################################################
##  NON-REPORTABLE RUN: profile={profile!r}{why}
##  Results are labelled reportable=false. Only PROFILE=full is the published protocol.
################################################################################
"""


class InvalidActionError(ValueError):
    """A policy returned an action that is NaN/inf or of the wrong shape."""


# --------------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------------
@dataclass
class Built:
    suite: Suite
    method: Method
    config: Any
    policy: Policy
    teacher_id: str | None
    teacher_weights: str | None = None  # weights_digest of the teacher the policy was distilled from / wraps


def set_threads(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def build_policy(spec: RunSpec, suite: Suite | None = None, method_id: str | None = None) -> Built:
    """Method (+variant) -> config -> teacher (if needed) -> ``distill`` (cached by the method) -> Policy."""
    suite = suite or make_suite(spec.suite)
    method = make_method(method_id or spec.method)
    if not method.supports(suite.suite_id):
        raise ConfigError(f"method {method.name!r} does not support suite {suite.suite_id!r} "
                         f"(supports: {', '.join(method.suites or ())})")
    config = method.config(suite.suite_id, debug=spec.debug, overrides=dict(spec.overrides))
    teacher = None
    teacher_id = suite.teacher
    if spec.teacher:  # TEACHER=... replaces the suite's teacher (validated: unknown names exit 2 with a suggestion)
        make_method(spec.teacher)
        teacher_id = spec.teacher
    if method.needs_teacher:
        if teacher_id is None:
            raise ConfigError(f"method {method.name!r} needs a teacher, and suite {suite.suite_id!r} has none")
        teacher = build_policy(RunSpec(method=teacher_id, suite=spec.suite, device=spec.device,
                                       cache_dir=spec.cache_dir), suite=suite).policy
    data = DataSource(suite, Path(spec.cache_dir) / "artifacts" / method.name, device=spec.device)
    policy = method.distill(teacher, data, config)
    policy.to(spec.device)
    return Built(suite, method, config, policy, teacher_id, weights_digest(teacher) if teacher is not None else None)


# --------------------------------------------------------------------------------------------------
# one episode
# --------------------------------------------------------------------------------------------------
def check_action(action: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    a = np.asarray(action, dtype=np.float64)
    if a.shape != shape:
        raise InvalidActionError(f"action has shape {a.shape}, the env expects {shape}")
    if not np.all(np.isfinite(a)):
        raise InvalidActionError(f"action contains NaN or inf: {np.array2string(a, precision=3)}")
    return a


def _short_error(kind: str, exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{kind}: {type(exc).__name__}: {exc}{where}"


def strip_privileged(obs: dict) -> dict:
    return {k: v for k, v in obs.items() if k != "privileged"}


def run_episode(env: Any, policy: Policy, ep: EpisodeSpec, *, privileged: bool, timeout_s: float,
                on_obs: Callable[[dict], None] | None = None,
                on_step: Callable[[int, dict, dict], None] | None = None) -> tuple[EpisodeResult, bool]:
    """Roll out one episode. Returns (result, env_ok): env_ok False means the env raised and must be rebuilt.

    ``on_obs(obs)`` sees every observation handed to ``infer``; ``on_step(step, obs, info)`` every env step
    (offline analysis tools replay logged episodes through these hooks).

    Any exception in the env or the policy fails this episode with the reason; it never propagates.
    """
    t0 = time.perf_counter()
    steps = calls = 0
    success = False
    error: str | None = None
    env_ok = True
    metrics: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    stage = "env.reset"
    try:
        obs, info = env.reset(seed=ep.seed, options={"episode": ep})
        stage = "policy.reset"
        policy.reset(ep.task, ep.seed)
        shape = tuple(env.action_space.shape)
        done = False
        while not done and steps < ep.max_steps:
            if time.perf_counter() - t0 > timeout_s:
                error = f"timeout: episode exceeded {timeout_s:.0f} s wall clock after {steps} steps"
                break
            stage = "policy.infer"
            if not privileged:
                obs = strip_privileged(obs)
            if on_obs is not None:
                on_obs(obs)
            chunk = policy.infer(obs)
            if not isinstance(chunk, ActionChunk):
                raise InvalidActionError(f"infer returned {type(chunk).__name__}, expected ActionChunk")
            calls += 1
            for action in chunk.executed():
                stage = "policy.infer"
                a = check_action(action, shape)
                stage = "env.step"
                obs, _reward, terminated, truncated, info = env.step(a)
                steps += 1
                if on_step is not None:
                    on_step(steps, obs, info)
                success = bool(info.get("success", False))
                if terminated or truncated or success or steps >= ep.max_steps:
                    done = True
                    break
    except InvalidActionError as e:
        error = f"invalid action: {e}"
    except Exception as e:  # noqa: BLE001 — any failure inside env or policy fails the episode only
        error = _short_error(stage, e)
        env_ok = not stage.startswith("env")
    if error is not None:
        success = False
    if env_ok:
        try:
            metrics = dict(env.episode_metrics()) if hasattr(env, "episode_metrics") else {}
        except Exception as e:  # noqa: BLE001
            metrics = {"metrics_error": _short_error("env.episode_metrics", e)}
    try:
        stats = policy.episode_stats()
    except Exception as e:  # noqa: BLE001
        stats = {"stats_error": _short_error("policy.episode_stats", e)}
    result = EpisodeResult(
        episode_id=ep.episode_id, task=ep.task.name, trial=ep.trial, seed=ep.seed, success=success, steps=steps,
        error=error, infer_calls=calls, wall_s=round(time.perf_counter() - t0, 4), instruction=ep.task.instruction,
        metrics=_jsonable(metrics), method_stats=_jsonable(stats), finished_at=round(time.time(), 3))
    return result, env_ok


def _jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays -> Python; NaN/inf -> None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


class EpisodeWorker:
    """Holds one suite, one policy and a small cache of envs (reused across a task's episodes)."""

    def __init__(self, spec: RunSpec, built: Built | None = None, worker_id: int = 0, env_cache: int = 1):
        set_threads(spec.threads)
        self.spec = spec
        self.built = built or build_policy(spec)
        self.worker_id = worker_id
        self.env_cache = env_cache
        self._envs: dict[str, Any] = {}

    def _env(self, ep: EpisodeSpec) -> Any:
        env = self._envs.pop(ep.task.name, None)
        if env is None:
            while len(self._envs) >= self.env_cache:  # evict the least recently used
                self._drop(next(iter(self._envs)))
            env = self.built.suite.make_env(ep.task, privileged=self.built.method.privileged)
        self._envs[ep.task.name] = env  # most recent last
        return env

    def _drop(self, name: str) -> None:
        env = self._envs.pop(name, None)
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass

    def run(self, ep: EpisodeSpec) -> EpisodeResult:
        try:
            env = self._env(ep)
        except SuiteUnavailableError:
            raise  # nothing can run here (e.g. assets absent): stop the run instead of failing every episode
        except Exception as e:  # noqa: BLE001 — a broken env fails the episode, the run goes on
            return EpisodeResult(ep.episode_id, ep.task.name, ep.trial, ep.seed, False, 0,
                                 error=_short_error("suite.make_env", e), instruction=ep.task.instruction,
                                 worker=self.worker_id)
        result, env_ok = run_episode(env, self.built.policy, ep, privileged=self.built.method.privileged,
                                     timeout_s=self.spec.episode_timeout_s)
        if not env_ok:
            self._drop(ep.task.name)
        result.worker = self.worker_id
        return result

    def close(self) -> None:
        for name in list(self._envs):
            self._drop(name)


# --------------------------------------------------------------------------------------------------
# a whole run
# --------------------------------------------------------------------------------------------------
def aggregate(suite: Suite, episodes: list[dict]) -> dict[str, Any]:
    """Success rate with a Wilson interval, per-task rates, suite metrics and method statistics."""
    n = len(episodes)
    k = sum(1 for e in episodes if e["success"])
    per_task: dict[str, Any] = {}
    for e in episodes:
        t = per_task.setdefault(e["task"], {"n": 0, "successes": 0, "errors": 0, "instruction": e.get("instruction", "")})
        t["n"] += 1
        t["successes"] += int(e["success"])
        t["errors"] += int(e["error"] is not None)
    for t in per_task.values():
        t["success_rate"] = t["successes"] / t["n"]
        t["success_ci95"] = list(wilson(t["successes"], t["n"]))
    results = [EpisodeResult.from_dict(e) for e in episodes]
    return {
        "n_episodes": n,
        "n_errors": sum(1 for e in episodes if e["error"] is not None),
        "success_rate": k / n if n else 0.0,
        "success_ci95": list(wilson(k, n)),
        "per_task": per_task,
        "suite_metrics": _jsonable(suite.aggregate(results)) if n else {},
        "method_stats": _jsonable(aggregate_method_stats(episodes)),
    }


def aggregate_method_stats(episodes: list[dict]) -> dict[str, Any]:
    """Mean of each numeric (or equal-length numeric list) method statistic, overall and per task."""

    def mean_of(rows: list[dict]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        keys = {k for r in rows for k in r}
        for key in sorted(keys):
            vals = [r[key] for r in rows if key in r]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                out[key] = float(np.mean(vals))
            elif all(isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v) for v in vals) \
                    and len({len(v) for v in vals}) == 1:
                out[key] = np.mean(np.asarray(vals, dtype=float), axis=0).tolist()
        return out

    rows = [e.get("method_stats") or {} for e in episodes]
    if not any(rows):
        return {}
    per_task: dict[str, list[dict]] = {}
    for e, r in zip(episodes, rows):
        per_task.setdefault(e["task"], []).append(r)
    return {"overall": mean_of(rows), "per_task": {t: mean_of(rs) for t, rs in sorted(per_task.items())}}


def weights_digest(policy: Policy) -> str | None:
    """SHA-256 (12 hex) over the inference modules' parameters and buffers; None for policies without modules."""
    import hashlib

    import torch

    modules = policy.modules()
    if not modules:
        return None
    h = hashlib.sha256()
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            raw = t.detach().cpu().contiguous().reshape(-1)
            h.update(raw.view(torch.uint8).numpy().tobytes())  # any dtype (bf16 included), byte for byte
    return h.hexdigest()[:12]


def banner(spec: RunSpec) -> str | None:
    if spec.reportable:
        return None
    why = []
    if spec.profile != "full":
        why.append(f"profile {spec.profile}")
    if spec.debug:
        why.append("debug config")
    if spec.limit is not None:
        why.append(f"limit={spec.limit}")
    if spec.overrides:
        why.append("config overrides")
    return NON_REPORTABLE_BANNER.format(profile=spec.profile, why=f" ({', '.join(why)})")


def run(spec: RunSpec, *, progress: bool = True, log: Callable[[str], None] | None = None) -> RunDir:
    """Evaluate ``spec``; resumable: episodes already in episodes.jsonl are never run again."""
    from harness.executors import execute
    from harness.profiling import profile_run

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    set_threads(spec.threads)
    if (b := banner(spec)) is not None:
        log(b)
    suite = make_suite(spec.suite)
    method = make_method(spec.method)
    config = method.config(suite.suite_id, debug=spec.debug, overrides=dict(spec.overrides))
    protocol_digest = file_digest(suite.protocol_path())
    built = build_policy(spec, suite=suite)  # before run.json: a failed build leaves no empty run folder
    weights = weights_digest(built.policy)
    # the weights that run (student and any wrapped teacher) are part of the run's identity: a retrained
    # teacher or a re-distilled student starts a new run instead of resuming the old one's episodes
    run_id = spec.run_id(config.digest() + (f"-w{weights}" if weights else ""), protocol_digest)
    rd = RunDir.for_run(spec.results, suite.suite_id, method.method_id, run_id)
    started = provenance.now_iso()
    if rd.run_json.exists():
        run_json = rd.read_run()
        run_json.setdefault("resumes", []).append({"at": started, "workers": spec.workers,
                                                   "executor": spec.executor})
    else:
        run_json = {
            "schema_version": 1, "run_id": run_id, "spec": spec.to_dict(), "started_at": started,
            "method_config": config.to_dict(), "reportable": spec.reportable, "weights_sha256_12": weights,
            # which teacher this policy came from: the reporter pairs it with that teacher's run
            "teacher_weights_sha256_12": built.teacher_weights,
            "provenance": provenance.collect(config.digest(), spec.threads,
                                             {"suite": suite.provenance(), "protocol_digest": protocol_digest}),
        }
    rd.write_run(run_json)
    rd.repair_episodes()

    all_eps = suite.episodes(spec.profile)
    if spec.limit is not None:
        all_eps = all_eps[: spec.limit]
    done = {e["episode_id"] for e in rd.read_episodes()}
    pending = [e for e in all_eps if e.episode_id not in done]
    log(f"[vla-bench] {method.method_id} on {suite.suite_id} ({spec.profile}): {len(all_eps)} episodes, "
        f"{len(done)} already done, {len(pending)} to run -> {rd.path}")

    if pending:
        execute(spec, built, pending, rd, progress=progress)

    episodes = rd.read_episodes()
    wanted = {e.episode_id for e in all_eps}
    episodes = [e for e in episodes if e["episode_id"] in wanted]
    agg = aggregate(suite, episodes)
    prof: dict[str, Any] = {"gflops_per_call": None, "gflops_per_action": None, "latency_ms": None, "cpu_ms": None,
                            "params": None, "vs_teacher": None}
    previous = rd.read_metrics() if rd.metrics_json.exists() else None
    if previous and not pending and previous.get("latency_ms") is not None:
        prof = {k: previous.get(k) for k in (*prof, "peak_memory_mb", "profiling")}  # nothing new: keep profile
    elif not spec.skip_profile:
        prof = profile_run(spec, built, log=log)
    metrics = {
        "schema_version": 1, "method": method.method_id, "suite": suite.suite_id, "profile": spec.profile,
        "reportable": spec.reportable, "run_id": run_id, "device": spec.device, "threads": spec.threads,
        "complete": len(episodes) == len(all_eps), "updated_at": provenance.now_iso(),
        "teacher": built.teacher_id, **agg, **prof,
    }
    rd.write_metrics(metrics)
    run_json["finished_at"] = provenance.now_iso()
    run_json["provenance"]["load_average_end"] = provenance.load_average()
    rd.write_run(run_json)
    suite.close()
    return rd
