"""The CI regression gate: compare a candidate results folder against a baseline, per (suite, method, profile).

Success is recomputed from episodes.jsonl (the per-episode source of truth; metrics.json success figures are
not read) on the episode ids both runs share. A success regression is a *worse* candidate (more episodes lost
than gained) with a two-sided **exact McNemar** p-value below ``alpha`` on the discordant pairs; the paired
bootstrap interval of the difference is printed beside it. Latency and FLOPs are not per episode, so they
come from metrics.json ``vs_teacher``: the gate fails when the speedup against the teacher falls below
``baseline * (1 - latency_tol)`` (wall clock; ``cpu_speedup``, thread CPU time, against ``cpu_tol``) or the
FLOPs ratio rises above ``baseline * (1 + flops_tol)``. Ratios against a different teacher are not compared.

Exit codes: 0 pass, 1 regression (or nothing comparable), 2 usage error (bad folder, bad tolerance).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from reports.analysis import paired_vs
from reports.loader import Results, Run


@dataclass
class GateConfig:
    alpha: float = 0.05          # McNemar significance level for a success drop
    latency_tol: float = 0.25    # allowed relative fall of the (wall-clock) speedup vs the teacher
    flops_tol: float = 0.02      # allowed relative rise of the FLOPs ratio vs the teacher
    cpu_tol: float | None = None  # allowed relative fall of the thread-CPU-time speedup (None: latency_tol)

    @property
    def cpu_tolerance(self) -> float:
        return self.latency_tol if self.cpu_tol is None else self.cpu_tol

    def check(self) -> None:
        def bad(v: Any) -> bool:
            return not isinstance(v, (int, float)) or math.isnan(v)

        if bad(self.alpha) or not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if bad(self.latency_tol) or not 0.0 <= self.latency_tol < 1.0:
            raise ValueError(f"latency tolerance must be in [0, 1), got {self.latency_tol!r}")
        if bad(self.flops_tol) or not 0.0 <= self.flops_tol < math.inf:
            raise ValueError(f"FLOPs tolerance must be >= 0, got {self.flops_tol!r}")
        if self.cpu_tol is not None and (bad(self.cpu_tol) or not 0.0 <= self.cpu_tol < 1.0):
            raise ValueError(f"CPU-time tolerance must be in [0, 1), got {self.cpu_tol!r}")


@dataclass
class Row:
    key: tuple[str, str, str]
    base: Run | None
    cand: Run | None
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (name, failed, detail)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return any(f for _, f, _ in self.checks)

    @property
    def status(self) -> str:
        if self.base is None:
            return "new (candidate only)"
        if self.cand is None:
            return "missing in candidate"
        return "FAIL" if self.failed else "ok"


def _pick(results: Results, key: tuple[str, str, str]) -> Run | None:
    runs = results.runs_for(key)
    complete = [r for r in runs if r.complete]
    return (complete or runs or [None])[0]


def compare(base: Results, cand: Results, cfg: GateConfig) -> list[Row]:
    rows = []
    for key in sorted(set(base.keys()) | set(cand.keys())):
        b, c = _pick(base, key), _pick(cand, key)
        row = Row(key, b, c)
        rows.append(row)
        if b is None or c is None:
            continue
        pd = paired_vs(b.outcomes(), c.outcomes())
        row.info["paired"] = pd
        row.info["base_rate"], row.info["cand_rate"] = b.success_rate, c.success_rate
        if pd["n"] == 0:
            row.checks.append(("success", True, "no shared episode ids: outcomes cannot be compared"))
        else:
            worse = pd["b"] > pd["c"]
            failed = worse and pd["p_mcnemar"] < cfg.alpha
            detail = (f"{pd['diff'] * 100:+.1f} pp on {pd['n']} shared episodes "
                      f"(lost {pd['b']}, gained {pd['c']}; McNemar p={pd['p_mcnemar']:.3g}; "
                      f"bootstrap 95% [{pd['ci95'][0] * 100:+.1f}, {pd['ci95'][1] * 100:+.1f}] pp)")
            row.checks.append(("success", failed, detail))
        if not c.complete:
            row.checks.append(("complete", False, f"candidate run is incomplete ({c.n} episodes)"))
        vb, vc = (b.metrics or {}).get("vs_teacher") or {}, (c.metrics or {}).get("vs_teacher") or {}
        if vb and vc and vb.get("teacher") != vc.get("teacher"):
            detail = (f"teacher changed ({vb.get('teacher')} -> {vc.get('teacher')}): speedup and FLOPs ratios "
                      "are not comparable; regenerate the baseline")
            row.checks.append(("teacher", True, detail))
            continue
        sb, sc = vb.get("speedup"), vc.get("speedup")
        row.info["speedup"] = (sb, sc)
        if sb is not None and sc is not None:
            floor = sb * (1 - cfg.latency_tol)
            detail = f"{sb:.3g}x -> {sc:.3g}x (floor {floor:.3g}x, tolerance {cfg.latency_tol:.0%})"
            row.checks.append(("speedup", sc < floor, detail))
        elif sb is not None:
            row.checks.append(("speedup", True, f"baseline has speedup {sb:.3g}x, candidate has none"))
        cb, cc = vb.get("cpu_speedup"), vc.get("cpu_speedup")
        row.info["cpu_speedup"] = (cb, cc)
        if cb is not None and cc is not None:
            floor = cb * (1 - cfg.cpu_tolerance)
            detail = f"{cb:.3g}x -> {cc:.3g}x (floor {floor:.3g}x, tolerance {cfg.cpu_tolerance:.0%})"
            row.checks.append(("cpu_speedup", cc < floor, detail))
        fb, fc = vb.get("flops_ratio"), vc.get("flops_ratio")
        row.info["flops_ratio"] = (fb, fc)
        if fb is not None and fc is not None:
            ceil = fb * (1 + cfg.flops_tol)
            detail = f"{fb:.4g} -> {fc:.4g} (ceiling {ceil:.4g}, tolerance {cfg.flops_tol:.0%})"
            row.checks.append(("flops_ratio", fc > ceil, detail))
        elif fb is not None:
            row.checks.append(("flops_ratio", True, f"baseline has FLOPs ratio {fb:.4g}, candidate has none"))
    return rows


def _fmt_rate(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _fmt_pair(p: tuple | None, spec: str) -> str:
    if not p:
        return "-"
    return " -> ".join("-" if v is None else format(v, spec) for v in p)


def render(rows: list[Row], cfg: GateConfig) -> str:
    header = ["suite", "method", "profile", "status", "success base -> cand", "diff pp", "McNemar p",
              "speedup", "cpu speedup", "FLOPs ratio"]
    table = [header]
    for r in rows:
        pd = r.info.get("paired")
        table.append([*r.key, r.status,
                      f"{_fmt_rate(r.info.get('base_rate'))} -> {_fmt_rate(r.info.get('cand_rate'))}"
                      if pd else "-",
                      f"{pd['diff'] * 100:+.1f} (n={pd['n']})" if pd else "-",
                      f"{pd['p_mcnemar']:.3g}" if pd else "-",
                      _fmt_pair(r.info.get("speedup"), ".3g"), _fmt_pair(r.info.get("cpu_speedup"), ".3g"),
                      _fmt_pair(r.info.get("flops_ratio"), ".4g")])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failures = [(r, name, detail) for r in rows for name, failed, detail in r.checks if failed]
    notes = [(r, name, detail) for r in rows for name, failed, detail in r.checks if not failed]
    title = (f"vla-bench gate: success drop = worse and exact McNemar p < {cfg.alpha}; speedup may fall "
             f"{cfg.latency_tol:.0%} (wall) / {cfg.cpu_tolerance:.0%} (thread CPU time); FLOPs ratio may rise "
             f"{cfg.flops_tol:.0%}")
    out = [title, "", *lines, ""]
    for r, name, detail in failures:
        out.append(f"FAIL {'/'.join(r.key)} {name}: {detail}")
    for r, name, detail in notes:
        out.append(f"  ok {'/'.join(r.key)} {name}: {detail}")
    compared = [r for r in rows if r.base is not None and r.cand is not None]
    if not compared:
        out.append("FAIL no (suite, method, profile) is present in both baseline and candidate")
    verdict = "FAILED" if failures or not compared else "PASSED"
    out.append(f"gate {verdict}: {len(compared)} compared, {len(failures)} failing checks")
    return "\n".join(out)


def gate(base: Results, cand: Results, cfg: GateConfig) -> tuple[int, str]:
    cfg.check()
    rows = compare(base, cand, cfg)
    text = render(rows, cfg)
    compared = [r for r in rows if r.base is not None and r.cand is not None]
    return (1 if (not compared or any(r.failed for r in rows)) else 0), text
