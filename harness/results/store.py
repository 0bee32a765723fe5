"""The one results writer/reader. Appends are flushed per episode; JSON files are written atomically
(temp file + fsync + rename), so ``kill -9`` at any moment loses at most the episode in flight."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from harness.results.schema import SchemaError, validate_episode, validate_metrics, validate_run


def _atomic_write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def safe_method_dir(method_id: str) -> str:
    """Method ids become folder names as they are (``fastv@keep0.5``); path separators are refused."""
    if "/" in method_id or "\\" in method_id or method_id in ("", ".", ".."):
        raise ValueError(f"method id {method_id!r} cannot be used as a folder name")
    return method_id


@dataclass
class RunDir:
    path: Path

    @classmethod
    def for_run(cls, results: Path | str, suite_id: str, method_id: str, run_id: str) -> "RunDir":
        return cls(Path(results) / suite_id / safe_method_dir(method_id) / run_id)

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def episodes_jsonl(self) -> Path:
        return self.path / "episodes.jsonl"

    @property
    def metrics_json(self) -> Path:
        return self.path / "metrics.json"

    # ----- run.json -----
    def write_run(self, run: dict) -> None:
        validate_run(run, str(self.run_json))
        self.path.mkdir(parents=True, exist_ok=True)
        _atomic_write_json(self.run_json, run)

    def read_run(self) -> dict:
        return validate_run(json.loads(self.run_json.read_text()), str(self.run_json))

    # ----- episodes.jsonl -----
    def read_episodes(self) -> list[dict]:
        """All complete episode lines; a torn last line (killed mid-write) is ignored and later overwritten."""
        if not self.episodes_jsonl.exists():
            return []
        out, seen = [], set()
        with open(self.episodes_jsonl) as f:
            for lineno, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    break  # torn write at the end
                line = line.strip()
                if not line:
                    continue
                ep = validate_episode(json.loads(line), f"{self.episodes_jsonl}:{lineno}")
                if ep["episode_id"] in seen:
                    raise SchemaError(f"{self.episodes_jsonl}:{lineno}: duplicate episode {ep['episode_id']!r}")
                seen.add(ep["episode_id"])
                out.append(ep)
        return out

    def repair_episodes(self) -> None:
        """Truncate a torn last line so appends start on a fresh line."""
        p = self.episodes_jsonl
        if not p.exists():
            return
        data = p.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            with open(p, "r+b") as f:
                f.truncate(cut)

    def append_episode(self, episode: dict) -> None:
        """Append one line and flush it to the OS: it survives ``kill -9`` of this process (not a power cut;
        an fsync per episode cost ~5% of a short episode's wall time, see docs/footguns.md)."""
        validate_episode(episode, f"{self.episodes_jsonl} (new line)")
        line = json.dumps(episode, sort_keys=True, allow_nan=False)
        with open(self.episodes_jsonl, "a") as f:
            f.write(line + "\n")

    # ----- metrics.json -----
    def write_metrics(self, metrics: dict) -> None:
        validate_metrics(metrics, str(self.metrics_json))
        _atomic_write_json(self.metrics_json, metrics)

    def read_metrics(self) -> dict:
        return validate_metrics(json.loads(self.metrics_json.read_text()), str(self.metrics_json))


def iter_runs(results: Path | str) -> Iterator[RunDir]:
    """Every run folder (one holding run.json) under a results root, in a stable order."""
    for run_json in sorted(Path(results).glob("*/*/*/run.json")):
        yield RunDir(run_json.parent)
