"""Env steps per second of the driving suite (highway-env) with the 128x128 camera, one thread.

Drives each scenario with a fixed cheap policy (waypoints along the instructed route at 8-20 m/s, computed
from the privileged route — no expert planning, no model) so the figure is the env's own cost: highway-env's
traffic simulation + our camera + metrics bookkeeping. Reports mean steps/s per scenario over n episodes with
the load average, and the expert's end-to-end rate (env + expert planning) for reference.

    .venv/bin/python benchmarks/driving_speed.py [--episodes 6] [--size 128]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from harness.plugins import make_suite  # noqa: E402
from suites.driving.control import world_to_ego  # noqa: E402


def cheap_action(env) -> np.ndarray:
    e = env.ego
    v = max(float(e.speed), 8.0)
    if env.route is not None:
        s0, _ = env.route.project(e.position, env.s_last)
        pts = env.route.at(s0 + v * 0.25 * np.arange(1, 9))
    else:
        pts = np.stack([e.position[0] + v * 0.25 * np.arange(1, 9), np.full(8, e.position[1])], 1)
    return world_to_ego(pts, e.position, float(e.heading)).reshape(-1).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=6)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--max-steps", type=int, default=150)
    a = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    suite = make_suite("driving")
    out = {"camera": a.size, "episodes_per_scenario": a.episodes, "load_avg_start": os.getloadavg(),
           "cpu": platform.processor() or platform.machine(), "per_scenario": {}}
    tot_steps = tot_time = 0.0
    for scen in suite.scenario_names:
        eps = [e for e in suite.episodes("quick") if e.task.meta["scenario"] == scen][: a.episodes]
        steps = 0
        dt = 0.0
        exp_steps, exp_dt = 0, 0.0
        expert = suite.expert()
        for ep in eps:
            env = suite.make_env(ep.task, privileged=True, camera_size=a.size)
            env.reset(seed=ep.seed, options={"episode": ep})
            n = 0
            while n < a.max_steps:
                act = cheap_action(env)  # policy cost excluded from the timing
                t0 = time.perf_counter()
                _, _, term, trunc, _ = env.step(act)
                dt += time.perf_counter() - t0
                n += 1
                if term or trunc:
                    break
            steps += n
            obs, _ = env.reset(seed=ep.seed, options={"episode": ep})
            expert.reset(ep.task, ep.seed)
            t0 = time.perf_counter()
            for k in range(a.max_steps):
                obs, _, term, trunc, _ = env.step(expert.infer(obs).actions[0])
                exp_steps += 1
                if term or trunc:
                    break
            exp_dt += time.perf_counter() - t0
        out["per_scenario"][scen] = {"env_steps": steps, "env_steps_per_s": round(steps / dt, 1),
                                     "expert_plus_env_steps_per_s": round(exp_steps / exp_dt, 1)}
        tot_steps += steps
        tot_time += dt
    out["env_steps_per_s_all"] = round(tot_steps / tot_time, 1)
    out["n_env_steps"] = int(tot_steps)
    out["load_avg_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
