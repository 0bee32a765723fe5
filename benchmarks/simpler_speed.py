"""SIMPLER tabletop speed: env steps/s with the suite's RGB 128x128 camera on one core (torch 1 thread,
SAPIEN CPU physics, Vulkan through Mesa lavapipe), plus state-only steps/s for comparison.

    .venv/bin/python benchmarks/simpler_speed.py [--tasks pick_red_cube,stack_red_on_green] [--steps 100]

Each task: build the env (not timed in steps/s; reported separately), reset, then ``--steps`` random actions
in ``--rounds`` interleaved rounds (rgb / state alternating), timed with perf_counter. Prints median and range
of the per-round rates and the 1-minute load average before and after (other jobs share the 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", default="pick_red_cube,stack_red_on_green,push_blue_cube,place_sphere_in_bin")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", default=None, help="write the figures here")
    a = p.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(1)
    from harness.plugins import make_suite

    suite = make_suite("simpler_tabletop-v1")
    load_before = os.getloadavg()[0]
    rows = []
    for name in a.tasks.split(","):
        task = suite.task(name)
        envs = {}
        for mode in ("rgb", "state"):
            t0 = time.perf_counter()
            envs[mode] = suite.make_env(task, render=(mode == "rgb"))
            envs[mode].reset(seed=0)
            envs[mode].make_s = time.perf_counter() - t0
        rates: dict[str, list[float]] = {"rgb": [], "state": []}
        rng = np.random.default_rng(0)
        for _ in range(a.rounds):
            for mode, env in envs.items():
                env.reset(seed=int(rng.integers(1 << 30)))
                acts = rng.uniform(-1, 1, (a.steps, 7)).astype(np.float32)
                t0 = time.perf_counter()
                for act in acts:
                    env.step(act)
                rates[mode].append(a.steps / (time.perf_counter() - t0))
        row = {"task": name, "steps_per_round": a.steps, "rounds": a.rounds}
        for mode, r in rates.items():
            row[f"{mode}_steps_per_s_median"] = round(float(np.median(r)), 1)
            row[f"{mode}_steps_per_s_range"] = [round(float(min(r)), 1), round(float(max(r)), 1)]
            row[f"{mode}_make_env_s"] = round(envs[mode].make_s, 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
        for env in envs.values():
            env.close()
    out = {"rows": rows, "load_average_1m_before": load_before, "load_average_1m_after": os.getloadavg()[0],
           "cpu_count": os.cpu_count(), "provenance": suite.provenance()}
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
