"""Command line: ``vla-bench`` / ``python -m harness``.

    vla-bench list                               methods, suites and devices with one-line descriptions
    vla-bench bench --method M --suite S ...     evaluate (distil first if needed; resumable)
    vla-bench profile --method M --suite S       FLOPs/latency of M and the suite's teacher, interleaved
    vla-bench validate RESULTS                   check every result file against the schema
    vla-bench serve --method M --suite S         serve M's policy over a socket (client: --method remote)

Bad input (an unknown name, a malformed config) exits with code 2 and names the closest valid choice.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from harness.interfaces import PROFILES, ConfigError, MissingArtifactError, SuiteUnavailableError, parse_value
from harness.registry import UnknownNameError

EXIT_USAGE = 2


def _parse_overrides(items: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key] = parse_value(value)
    return tuple(sorted(out.items()))


def _spec_from_args(a: argparse.Namespace):
    from harness.specs import RunSpec

    return RunSpec(method=a.method, suite=a.suite, profile=a.profile, results=a.results, workers=a.workers,
                   executor=a.executor, device=a.device, threads=a.threads, debug=a.debug,
                   overrides=_parse_overrides(a.set), limit=a.limit, profile_calls=a.profile_calls,
                   skip_profile=a.no_profile, episode_timeout_s=a.episode_timeout, teacher=a.teacher or None)


def cmd_list(a: argparse.Namespace) -> int:
    from harness.plugins import DEVICES, METHODS, SUITES

    for title, reg in (("methods", METHODS), ("suites", SUITES), ("devices", DEVICES)):
        print(f"{title}:")
        for e in reg:
            variants = e.meta.get("variants")
            extra = f"  [variants: {', '.join(variants)}]" if variants else ""
            print(f"  {e.name:<28} {e.description}{extra}")
        for name, target in sorted(reg.aliases().items()):
            print(f"  {name:<28} = {target}")
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from harness.runner import run

    spec = _spec_from_args(a)
    rd = run(spec, progress=not a.quiet)
    m = rd.read_metrics()
    lo, hi = m["success_ci95"]
    lines = [f"\n{m['method']} on {m['suite']} [{m['profile']}{'' if m['reportable'] else ', NOT reportable'}]",
             f"  success     {m['success_rate']:.3f}  (95% CI {lo:.3f}-{hi:.3f}, n={m['n_episodes']}, "
             f"errors={m['n_errors']})"]
    if m["latency_ms"]:
        lines.append(f"  latency     p50 {m['latency_ms']['p50']:.2f} ms, p90 {m['latency_ms']['p90']:.2f} ms "
                     f"({m['threads']} thread, {m['device']})")
    if m["gflops_per_call"] is not None:
        lines.append(f"  GFLOPs      {m['gflops_per_call']:.4f} per call, {m['gflops_per_action']:.4f} per action")
    if m["vs_teacher"]:
        vt = m["vs_teacher"]
        fr = f"{vt['flops_ratio']:.3f}" if vt.get("flops_ratio") is not None else "n/a"
        lines.append(f"  vs teacher  {vt['teacher']}: speedup {vt['speedup']:.2f}x, FLOPs ratio {fr}")
    if m["suite_metrics"]:
        lines.append("  suite       " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                                for k, v in m["suite_metrics"].items()
                                                if isinstance(v, (int, float, str))))
    lines.append(f"  results     {rd.path}/")
    lines.append(f"  report      make report RESULTS={spec.results}  (then open reports/site/index.html)")
    print("\n".join(lines))
    return 0


def cmd_profile(a: argparse.Namespace) -> int:
    from harness.profiling import profile_run
    from harness.results.provenance import collect, now_iso
    from harness.runner import build_policy, set_threads

    spec = _spec_from_args(a)
    set_threads(spec.threads)
    built = build_policy(spec)
    prof = profile_run(spec, built, log=lambda s: print(s, file=sys.stderr))
    out = Path(spec.results) / built.suite.suite_id / built.method.method_id / f"profile-{spec.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"schema_version": 1, "method": built.method.method_id, "suite": built.suite.suite_id,
              "measured_at": now_iso(), "provenance": collect(built.config.digest(), spec.threads), **prof}
    out.write_text(json.dumps(record, indent=2, sort_keys=True, default=float) + "\n")
    lat = prof["latency_ms"]
    if lat:
        print(f"{built.method.method_id}: p50 {lat['p50']:.2f} ms, {prof['gflops_per_call'] or 0:.4f} GFLOPs/call")
    if prof["vs_teacher"]:
        vt = prof["vs_teacher"]
        print(f"vs {vt['teacher']}: speedup {vt['speedup']:.2f}x (cpu {vt['cpu_speedup']:.2f}x), "
              f"FLOPs ratio {vt['flops_ratio']}")
    print(f"written {out}")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from harness.results.store import iter_runs

    n = 0
    for rd in iter_runs(a.results):
        rd.read_run()
        rd.read_episodes()
        if rd.metrics_json.exists():
            rd.read_metrics()
        n += 1
    print(f"{n} runs valid under {a.results}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-bench", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list methods, suites and devices").set_defaults(fn=cmd_list)
    for name, fn, hlp in (("bench", cmd_bench, "evaluate a method on a suite"),
                          ("profile", cmd_profile, "profile a method against the suite's teacher")):
        s = sub.add_parser(name, help=hlp)
        s.add_argument("--method", "-m", default=os.environ.get("METHOD", "mock"))
        s.add_argument("--suite", "-s", default=os.environ.get("SUITE", "mock-v1"))
        s.add_argument("--teacher", default=None,
                       help="method id used as the teacher instead of the suite's (e.g. openvla, smolvla@tiny)")
        s.add_argument("--profile", "-p", default="smoke", choices=None, help=f"one of {', '.join(PROFILES)}")
        s.add_argument("--results", "-r", default="results")
        s.add_argument("--workers", "-w", type=int, default=1)
        s.add_argument("--executor", default="local")
        s.add_argument("--device", default="cpu")
        s.add_argument("--threads", type=int, default=1)
        s.add_argument("--debug", action="store_true", help="the method's debug config (never reportable)")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="method config override")
        s.add_argument("--limit", type=int, default=None, help="only the first N episodes (never reportable)")
        s.add_argument("--profile-calls", type=int, default=100)
        s.add_argument("--no-profile", action="store_true")
        s.add_argument("--episode-timeout", type=float, default=1800.0)
        s.add_argument("--quiet", "-q", action="store_true")
        s.set_defaults(fn=fn)
    from harness.server.cli import add_serve_command  # policy server (docs/scaleout.md)

    add_serve_command(sub)
    v = sub.add_parser("validate", help="validate every result file under RESULTS")
    v.add_argument("results", nargs="?", default="results")
    v.set_defaults(fn=cmd_validate)
    try:  # report / gate / paper-tables live in reports/ (optional until built)
        from reports.cli import add_commands  # type: ignore[import-not-found]

        add_commands(sub)
    except ImportError:
        pass
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (UnknownNameError, ConfigError, SuiteUnavailableError, MissingArtifactError) as e:
        print(f"vla-bench: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
