"""Ray executor: pending episodes run on Ray actors, each holding one :class:`EpisodeWorker` (one suite,
one policy built once, envs reused across a task's consecutive episodes).

Where it runs: on the cluster named by ``RAY_ADDRESS`` (``ray://head:10001`` or ``head:6379``), else on the
Ray instance this process already initialised, else on a local Ray started on demand with
``num_cpus=WORKERS``, no dashboard, usage statistics off, bound to 127.0.0.1 and shut down afterwards.

Invariants (the same as the local process pool, :mod:`harness.executors.local`):

- outcomes depend only on each episode's :class:`EpisodeSpec`: every actor rebuilds the policy from the
  same spec, so the per-episode results equal those of ``EXECUTOR=local`` with any worker count;
- one writer: actors return results; only this (driver) process appends to ``episodes.jsonl``;
- an actor that dies (segfault, ``os._exit``, OOM kill, lost node) is replaced; the episode it was running is
  retried once on a fresh actor and then marked failed with the reason; episodes merely queued behind it
  are re-queued without losing their retry. Nothing is lost or written twice.
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from harness.executors.local import Progress, _died
from harness.interfaces import EpisodeResult

if TYPE_CHECKING:
    from harness.interfaces import EpisodeSpec
    from harness.results.store import RunDir
    from harness.runner import Built
    from harness.specs import RunSpec

#: episodes queued on one actor at a time: the next one is already there when the current one ends
INFLIGHT_PER_ACTOR = 2
#: seconds to wait for an actor to build its policy before the run is declared broken
ACTOR_START_TIMEOUT_S = float(os.environ.get("VLA_BENCH_RAY_START_TIMEOUT", "600"))


class EpisodeActorImpl:
    """The body of the Ray actor (kept a plain class so it can be tested without Ray)."""

    def __init__(self, spec_dict: dict, worker_id: int):
        from harness.runner import EpisodeWorker
        from harness.specs import RunSpec

        self.worker = EpisodeWorker(RunSpec.from_dict(spec_dict), worker_id=worker_id)

    def ready(self) -> int:
        return os.getpid()

    def run(self, ep: EpisodeSpec) -> dict:
        return self.worker.run(ep).to_dict()

    def close(self) -> None:
        self.worker.close()


def _init_ray(workers: int) -> bool:
    """Connect to (or start) Ray. Returns True when this call started it (and so must shut it down)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "configure_logging": True,
             "log_to_driver": os.environ.get("VLA_BENCH_RAY_LOGS") == "1"}  # actors' output: set to 1
    address = os.environ.get("RAY_ADDRESS")
    if address:
        runtime_env: dict[str, Any] = {}
        if os.environ.get("VLA_BENCH_RAY_SHIP_CODE") == "1":  # nodes without this checkout: ship it
            from harness.plugins import ROOT

            runtime_env = {"working_dir": str(ROOT),
                           "excludes": [".venv", ".cache", "results", ".git", "reports/site", "**/__pycache__"]}
        ray.init(address=address, runtime_env=runtime_env or None, **quiet)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    return True


def execute_ray(spec: RunSpec, built: Built, pending: list[EpisodeSpec], rd: RunDir,
                progress: bool = True) -> None:
    try:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError
    except ImportError as e:
        raise ImportError("EXECUTOR=ray needs the ray extra: pip install -e '.[ray]' torch==2.13.0") from e

    started = _init_ray(spec.workers)
    Actor = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(EpisodeActorImpl)
    spec_dict = spec.to_dict()
    bar = Progress(len(pending), progress, f"{spec.method} | {spec.suite} | ray")
    next_id = 0
    actors: dict[int, Any] = {}  # worker id -> handle

    def new_actor() -> int:
        nonlocal next_id
        next_id += 1
        actors[next_id] = Actor.remote(spec_dict, next_id)
        return next_id

    def write(result: EpisodeResult) -> None:
        rd.append_episode(result.to_dict())
        bar.update(result)

    try:
        for _ in range(min(spec.workers, len(pending))):
            new_actor()
        # an actor that cannot even build its policy fails the run's episodes with the reason, as the pool does
        start_error = _check_started(ray, actors, GetTimeoutError, RayActorError)
        if start_error is not None:
            for ep in pending:
                write(_died(ep, f"worker error: {start_error}"))
            return

        queue = list(pending)  # sorted by task: consecutive episodes of a task reuse an actor's env
        queue.reverse()  # pop() from the end = first pending episode first
        attempts: dict[str, int] = {}
        inflight: dict[Any, tuple[int, EpisodeSpec]] = {}  # object ref -> (worker id, episode)
        order: dict[int, list[Any]] = {wid: [] for wid in actors}  # per actor, refs in submission order

        def feed(wid: int) -> None:
            while queue and len(order[wid]) < INFLIGHT_PER_ACTOR:
                ep = queue.pop()
                ref = actors[wid].run.remote(ep)
                inflight[ref] = (wid, ep)
                order[wid].append(ref)

        for wid in list(actors):
            feed(wid)
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1)
            ref = ready[0]
            wid, ep = inflight[ref]
            try:
                result = EpisodeResult.from_dict(ray.get(ref))
            except RayActorError as e:
                _replace_dead(ray, wid, e, actors, order, inflight, queue, attempts, write, new_actor, feed)
                continue
            except Exception as e:  # noqa: BLE001 — the episode code itself never raises; anything else fails it
                result = _died(ep, f"worker error: {type(e).__name__}: {e}")
            inflight.pop(ref)
            order[wid].remove(ref)
            write(result)
            feed(wid)
    finally:
        bar.close()
        for handle in actors.values():
            try:
                ray.kill(handle, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        if started:
            ray.shutdown()


def _check_started(ray: Any, actors: dict[int, Any], timeout_error: type, actor_error: type) -> str | None:
    refs = {actors[wid].ready.remote(): wid for wid in actors}
    try:
        ray.get(list(refs), timeout=ACTOR_START_TIMEOUT_S)
    except timeout_error:
        return f"Ray actors did not start within {ACTOR_START_TIMEOUT_S:.0f} s (VLA_BENCH_RAY_START_TIMEOUT)"
    except actor_error as e:
        return f"could not start an episode worker: {_reason(e)}"
    return None


def _reason(e: BaseException) -> str:
    """The useful line of a Ray error: the exception raised in the actor (e.g. ``ConfigError: ...``) when there
    is one, else Ray's first line (e.g. ``The actor died unexpectedly ...``)."""
    cause = getattr(e, "cause", None)
    if cause is not None and not isinstance(cause, str):
        return f"{type(cause).__name__}: {cause}"[:500]
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Exit)\b", line):
            return line[:500]
    return (lines[0] if lines else type(e).__name__)[:500]


def _replace_dead(ray: Any, wid: int, exc: BaseException, actors: dict, order: dict, inflight: dict, queue: list,
                  attempts: dict, write: Any, new_actor: Any, feed: Any) -> None:
    """Actor ``wid`` died. Its oldest unfinished episode was running: count an attempt (retry once, then fail);
    the ones queued behind it never started and go back to the queue as they were."""
    refs = order.pop(wid)
    actors.pop(wid, None)
    requeue = []
    for i, r in enumerate(refs):
        _, ep = inflight.pop(r)
        if i == 0:
            attempts[ep.episode_id] = attempts.get(ep.episode_id, 0) + 1
            if attempts[ep.episode_id] >= 2:
                write(_died(ep, f"worker process died twice while running this episode "
                                f"(last: {_reason(exc)})"))
                continue
        requeue.append(ep)
    queue.extend(reversed(requeue))  # run next, in their original order
    time.sleep(0.05)  # let Ray reap the dead worker before placing a new one on its CPU
    new = new_actor()
    order[new] = []
    feed(new)
