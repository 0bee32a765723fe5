"""Executors run pending episodes and hand each result to the one writer (the parent process)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.interfaces import EpisodeSpec
    from harness.results.store import RunDir
    from harness.runner import Built
    from harness.specs import RunSpec


def execute(spec: "RunSpec", built: "Built", pending: list["EpisodeSpec"], rd: "RunDir", progress: bool = True) -> None:
    if spec.executor == "local":
        from harness.executors.local import execute_local

        execute_local(spec, built, pending, rd, progress=progress)
    elif spec.executor == "ray":
        try:
            from harness.executors.ray_executor import execute_ray  # type: ignore[import-not-found]
        except ImportError as e:
            raise NotImplementedError(
                "EXECUTOR=ray is not available yet (issue 12: Ray executor); use EXECUTOR=local") from e
        execute_ray(spec, built, pending, rd, progress=progress)
