"""Local executor: in-process for WORKERS=1, a spawn-context process pool for WORKERS=N.

Outcomes do not depend on the worker count: each episode is fixed by its EpisodeSpec (env seed, policy
seed), envs are reset with that seed, and policies are rebuilt from the same cached artifact in every worker.
A worker process that dies (a segfault inside a simulator) fails the episodes it held, with the reason,
after one retry in a fresh pool; nothing already written is lost.
"""
from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from harness.interfaces import EpisodeResult, SuiteUnavailableError

if TYPE_CHECKING:
    from harness.interfaces import EpisodeSpec
    from harness.results.store import RunDir
    from harness.runner import Built
    from harness.specs import RunSpec


class Progress:
    """tqdm bar with episodes done, success so far and ETA."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.ok = self.n = self.err = 0
        self.bar = tqdm(total=total, disable=not enabled, desc=desc, unit="ep", dynamic_ncols=True)

    def update(self, result: EpisodeResult) -> None:
        self.n += 1
        self.ok += int(result.success)
        self.err += int(result.error is not None)
        self.bar.set_postfix(success=f"{self.ok}/{self.n} ({self.ok / self.n:.0%})", errors=self.err)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def execute_local(spec: "RunSpec", built: "Built", pending: list["EpisodeSpec"], rd: "RunDir",
                  progress: bool = True) -> None:
    bar = Progress(len(pending), progress, f"{spec.method} | {spec.suite}")
    try:
        if spec.workers == 1:
            from harness.runner import EpisodeWorker

            worker = EpisodeWorker(spec, built=built)
            try:
                for ep in pending:
                    result = worker.run(ep)
                    rd.append_episode(result.to_dict())
                    bar.update(result)
            finally:
                worker.close()
        else:
            _execute_pool(spec, pending, rd, bar)
    finally:
        bar.close()


# ----- process pool -----
_WORKER: Any = None


def _init_worker(spec_dict: dict, counter: Any) -> None:
    global _WORKER
    from harness.runner import EpisodeWorker
    from harness.specs import RunSpec

    with counter.get_lock():
        counter.value += 1
        worker_id = counter.value
    _WORKER = EpisodeWorker(RunSpec.from_dict(spec_dict), worker_id=worker_id)


def _run_one(ep: "EpisodeSpec") -> dict:
    return _WORKER.run(ep).to_dict()


def _execute_pool(spec: "RunSpec", pending: list["EpisodeSpec"], rd: "RunDir", bar: Progress) -> None:
    ctx = mp.get_context("spawn")  # fork + torch threads can deadlock
    attempts: dict[str, int] = {}
    queue = list(pending)  # sorted by task, so each worker reuses its env for consecutive episodes
    while queue:
        counter = ctx.Value("i", 0)
        broken = False
        with ProcessPoolExecutor(spec.workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(spec.to_dict(), counter)) as pool:
            inflight: dict[Future, "EpisodeSpec"] = {}
            it = iter(queue)
            queue = []

            def submit_next() -> bool:
                ep = next(it, None)
                if ep is None:
                    return False
                inflight[pool.submit(_run_one, ep)] = ep
                return True

            for _ in range(spec.workers * 2):  # a small lookahead keeps workers busy without hoarding
                if not submit_next():
                    break
            while inflight:
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    ep = inflight.pop(fut)
                    try:
                        result = EpisodeResult.from_dict(fut.result())
                    except BrokenProcessPool:
                        broken = True
                        attempts[ep.episode_id] = attempts.get(ep.episode_id, 0) + 1
                        if attempts[ep.episode_id] >= 2:
                            result = _died(ep, "worker process died twice while running this episode")
                        else:
                            queue.append(ep)
                            continue
                    except SuiteUnavailableError:
                        raise
                    except Exception as e:  # noqa: BLE001 — e.g. the worker failed to build its policy
                        result = _died(ep, f"worker error: {type(e).__name__}: {e}")
                    rd.append_episode(result.to_dict())
                    bar.update(result)
                    if not broken:
                        submit_next()
            if broken:
                queue.extend(it)  # never submitted: run them in the next pool
        if broken:
            queue.sort(key=lambda e: (e.task.index, e.trial))


def _died(ep: "EpisodeSpec", why: str) -> EpisodeResult:
    return EpisodeResult(ep.episode_id, ep.task.name, ep.trial, ep.seed, False, 0, error=why,
                         instruction=ep.task.instruction)
