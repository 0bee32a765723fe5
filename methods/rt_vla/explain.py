"""Post-hoc explanations (RT-VLA's offline language mode): control runs vision-only, and the language model
explains the safety-critical moments of a *logged* episode afterwards, so control latency never includes it.

    python -m methods.rt_vla.explain RESULTS/driving/rt_vla/<run_id> [--episodes ID ...] [--max-moments 5]

For each chosen episode (default: every failed episode, then the first successful ones, up to --limit):
1. replay it: rebuild the run's policy from run.json and re-simulate from the logged seed (episodes are
   deterministic; the replay's steps and success are checked against episodes.jsonl and the check recorded);
2. find safety-critical moments from the simulator's state: hard braking (acceleration <= --hard-brake m/s²),
   low time-to-collision (the env's TTC check failing), and the terminal infraction;
3. explain each moment with the RT-VLA student in vision+language mode on the observation of that moment.
Writes ``explanations.jsonl`` into the run folder (one JSON object per moment) and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from harness.results.store import RunDir

INFRACTIONS = ("vehicle_collision", "static_collision", "off_road", "wrong_route", "wrong_speed", "timeout_blocked")


def find_moments(trace: list[dict[str, Any]], outcome: str | None, hard_brake: float, max_moments: int) -> list[dict]:
    """trace rows: {step, accel, ttc_ok, speed}. Runs of consecutive flagged steps count once (their first step)."""
    moments: list[dict] = []
    prev: dict[str, int] = {}
    for row in trace:
        for kind, flagged in (("hard_braking", row["accel"] <= -hard_brake), ("low_ttc", not row["ttc_ok"])):
            if flagged and prev.get(kind, -10) != row["step"] - 1:
                moments.append({"step": row["step"], "kind": kind, "speed": row["speed"], "accel": row["accel"]})
            if flagged:
                prev[kind] = row["step"]
    if outcome in INFRACTIONS and trace:
        last = trace[-1]
        moments.append({"step": last["step"], "kind": f"infraction:{outcome}", "speed": last["speed"],
                        "accel": last["accel"]})
    # keep the infraction, then the earliest others
    infra = [m for m in moments if m["kind"].startswith("infraction")]
    rest = [m for m in moments if not m["kind"].startswith("infraction")]
    return sorted(rest[: max(0, max_moments - len(infra))] + infra, key=lambda m: m["step"])


def explain_run(run_dir: Path, episodes: list[str] | None = None, limit: int = 5, max_moments: int = 5,
                hard_brake: float = 3.0, explainer: str = "rt_vla@vision_language", log=print) -> Path:
    from harness.runner import build_policy, run_episode, set_threads
    from harness.specs import RunSpec

    rd = RunDir(Path(run_dir))
    run = rd.read_run()
    spec = RunSpec.from_dict(run["spec"])
    logged = {e["episode_id"]: e for e in rd.read_episodes()}
    if episodes:
        missing = [e for e in episodes if e not in logged]
        if missing:
            raise SystemExit(f"episodes not in {rd.episodes_jsonl}: {missing}")
        chosen = episodes
    else:
        failed = [k for k, e in logged.items() if not e["success"]]
        chosen = (failed + [k for k, e in logged.items() if e["success"]])[:limit]
    set_threads(spec.threads)  # the run's thread count: float reductions, hence trajectories, depend on it
    built = build_policy(spec)
    # an RT-VLA run is explained by its own student (same config and artifact); any other run by the default one
    same = spec.method.split("@")[0] == explainer.split("@")[0]
    explain = build_policy(RunSpec(method=explainer, suite=spec.suite, device=spec.device,
                                   debug=spec.debug if same else False,
                                   overrides=tuple(kv for kv in spec.overrides if kv[0] != "generate_text") if same else (),
                                   cache_dir=spec.cache_dir)).policy
    suite = built.suite
    specs = {e.episode_id: e for p in ("full", "quick", "smoke") for e in suite.episodes(p)}
    out_path = rd.path / "explanations.jsonl"
    n_out = 0
    with open(out_path, "w") as f:
        for eid in chosen:
            ep = specs.get(eid)
            if ep is None:
                log(f"[explain] {eid}: not an episode of {suite.suite_id}'s profiles; skipped")
                continue
            env = suite.make_env(ep.task, privileged=built.method.privileged)
            base = getattr(env, "unwrapped", env)
            trace: list[dict[str, Any]] = []
            frames: dict[int, dict] = {}

            def on_step(step: int, obs: dict, info: dict) -> None:
                ttc = getattr(base, "trace", {}).get("ttc_ok", [True])
                trace.append({"step": step, "accel": float(getattr(base, "accel", 0.0)),
                              "ttc_ok": bool(ttc[-1]) if ttc else True,
                              "speed": float(np.asarray(obs["proprio"])[0])})
                frames[step] = {k: v for k, v in obs.items() if k != "privileged"}

            result, _ = run_episode(env, built.policy, ep, privileged=built.method.privileged,
                                    timeout_s=spec.episode_timeout_s, on_step=on_step)
            metrics = result.metrics
            env.close()
            want = logged[eid]
            matches = result.steps == want["steps"] and result.success == want["success"]
            outcome = metrics.get("outcome") or (want.get("metrics") or {}).get("outcome")
            moments = find_moments(trace, outcome, hard_brake, max_moments)
            explain.reset(ep.task, ep.seed)
            for m in moments:
                chunk = explain.infer(frames[m["step"]])
                row = {"episode_id": eid, "task": ep.task.name, "instruction": ep.task.instruction, **m,
                       "t_s": round(m["step"] * 0.1, 2), "text": chunk.extras.get("text", ""),
                       "explainer": explainer, "replay_matches_log": bool(matches), "run_id": run["run_id"]}
                f.write(json.dumps(row) + "\n")
                n_out += 1
            log(f"[explain] {eid}: {len(moments)} moments (outcome {outcome}; replay matches log: {matches})")
    log(f"[explain] {n_out} explanations -> {out_path}")
    return out_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--episodes", nargs="*")
    ap.add_argument("--limit", type=int, default=5, help="episodes to explain when --episodes is not given")
    ap.add_argument("--max-moments", type=int, default=5)
    ap.add_argument("--hard-brake", type=float, default=3.0, help="deceleration (m/s²) that counts as hard braking")
    ap.add_argument("--explainer", default="rt_vla@vision_language")
    a = ap.parse_args(argv)
    if not (Path(a.run_dir) / "run.json").exists():
        print(f"explain: {a.run_dir} is not a run folder (no run.json)", file=sys.stderr)
        return 2
    explain_run(Path(a.run_dir), a.episodes, a.limit, a.max_moments, a.hard_brake, a.explainer,
                log=lambda s: print(s, file=sys.stderr))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
