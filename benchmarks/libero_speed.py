"""LIBERO simulator throughput: env steps/s with rendering off/on, 1 or 2 cameras, 64/128/224 px, EGL vs OSMesa;
and episodes/hour through the runner with WORKERS=1 and 2.

Every configuration runs in a fresh subprocess (MUJOCO_GL is read once per process), on libero_object task 0
from fixed init state 0, with the scripted expert's actions (a realistic mix of motion and contact). Steps are
timed after a warm-up (numba JIT, first renders). The machine's load average is recorded next to every row:
on a shared machine the figures are only comparable within one table.

    .venv/bin/python benchmarks/libero_speed.py                    # table to stdout + JSON to .cache/
    .venv/bin/python benchmarks/libero_speed.py --steps 60 --episodes 6 --out suites/libero/speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from harness.plugins import make_suite
cfg = json.loads(sys.argv[1])
suite = make_suite("libero_object-v1")
task = suite.tasks()[0]
render = cfg["cams"] > 0
cams = ("agentview", "wrist")[: max(cfg["cams"], 1)]
env = suite.make_env(task, privileged=True, render=render, image_size=cfg["size"], cameras=cams)
expert = suite.expert()
t0 = time.perf_counter()
obs, _ = env.reset(seed=7, options={{"init_state": 0}})
reset_s = time.perf_counter() - t0
expert.reset(task, 7)
def step(obs):
    a = expert.infer(obs).actions[0]
    return env.step(a)[0]
for _ in range(cfg["warmup"]):
    obs = step(obs)
t0 = time.perf_counter(); c0 = time.process_time()
for _ in range(cfg["steps"]):
    obs = step(obs)
wall = time.perf_counter() - t0; cpu = time.process_time() - c0
env.close()
print("RESULT " + json.dumps({{"steps_per_s": cfg["steps"] / wall, "cpu_ms_per_step": 1000 * cpu / cfg["steps"],
                              "wall_ms_per_step": 1000 * wall / cfg["steps"], "reset_s": reset_s}}))
"""


def load() -> float:
    return round(os.getloadavg()[0], 2)


def run_config(cfg: dict, backend: str) -> dict:
    env = {**os.environ, "MUJOCO_GL": backend, "PYOPENGL_PLATFORM": backend, "OMP_NUM_THREADS": "1"}
    la0 = load()
    p = subprocess.run([PY, "-c", CHILD.format(root=str(ROOT)), json.dumps(cfg)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=1800)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {**cfg, "backend": backend, "error": err, "load_before": la0, "load_after": load()}
    return {**cfg, "backend": backend, **json.loads(line[7:]), "load_before": la0, "load_after": load()}


def episodes_per_hour(workers: int, n: int, tmp: Path) -> dict:
    """The runner end to end: the expert (privileged, render-free env) on the first n quick episodes."""
    la0 = load()
    t0 = time.perf_counter()
    cmd = [str(ROOT / ".venv/bin/vla-bench"), "bench", "--method", "expert", "--suite", "libero_object-v1",
           "--profile", "quick", "--results", str(tmp / f"w{workers}"), "--workers", str(workers), "--limit", str(n)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        return {"workers": workers, "error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return {"workers": workers, "episodes": n, "wall_s": round(wall, 1), "episodes_per_hour": round(3600 * n / wall),
            "load_before": la0, "load_after": load(), "note": "includes process start, env creation and resets"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--episodes", type=int, default=6, help="episodes per WORKERS setting (0: skip)")
    ap.add_argument("--backends", default="egl,osmesa")
    ap.add_argument("--out", default=str(ROOT / ".cache" / "libero_speed.json"))
    a = ap.parse_args(argv)
    rows = []
    configs = [{"cams": 0, "size": 128}] + [{"cams": c, "size": s} for c in (1, 2) for s in (64, 128, 224)]
    for backend in a.backends.split(","):
        for cfg in configs:
            if cfg["cams"] == 0 and backend != a.backends.split(",")[0]:
                continue  # render-free is backend-independent
            r = run_config({**cfg, "steps": a.steps, "warmup": a.warmup}, backend)
            rows.append(r)
            print(json.dumps(r), flush=True)
    eph = []
    if a.episodes:
        with tempfile.TemporaryDirectory() as d:
            for w in (1, 2):
                r = episodes_per_hour(w, a.episodes, Path(d))
                eph.append(r)
                print(json.dumps(r), flush=True)
    out = {"rows": rows, "episodes_per_hour": eph, "cpu_count": os.cpu_count(),
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print("\n| backend | cameras | px | env steps/s | wall ms/step | CPU ms/step | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cams = "none (render off)" if r["cams"] == 0 else ("agentview" if r["cams"] == 1 else "agentview + wrist")
        px = "-" if r["cams"] == 0 else r["size"]
        if "error" in r:
            print(f"| {r['backend']} | {cams} | {px} | error: {r['error'][:60]} | | | {r['load_before']} |")
        else:
            print(f"| {r['backend'] if r['cams'] else 'any'} | {cams} | {px} | {r['steps_per_s']:.1f} | "
                  f"{r['wall_ms_per_step']:.0f} | {r['cpu_ms_per_step']:.0f} | {r['load_before']}-{r['load_after']} |")
    if eph:
        print("\n| WORKERS | episodes | wall s | episodes/hour | load avg |")
        print("|---|---|---|---|---|")
        for r in eph:
            if "error" in r:
                print(f"| {r['workers']} | error: {r['error'][:80]} | | | |")
            else:
                print(f"| {r['workers']} | {r['episodes']} | {r['wall_s']} | {r['episodes_per_hour']} | "
                      f"{r['load_before']}-{r['load_after']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
