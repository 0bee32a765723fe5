"""Leaderboard rows per suite: one flat dict per (method, profile) — the same rows feed the HTML tables,
the plots and the CSV / Parquet / Markdown exports, so every figure has one source."""
from __future__ import annotations

from typing import Any

from reports.analysis import bytes_per_call, median_halfwidth, paired_vs, project, projected_devices, run_speedup
from reports.loader import Results, Run, Selection


def measured_latency(res: Results, sel: Selection) -> dict[str, dict[str, Any]]:
    """Measured latency per device for a (suite, method, profile): the latest complete run on each device,
    else a ``vla-bench profile`` record for that device. Never projected figures."""
    suite, method, _profile = sel.key
    out: dict[str, dict[str, Any]] = {}
    for r in sel.all_runs:  # newest first
        if r.complete and r.metrics and r.metrics.get("latency_ms") and r.device not in out:
            lat = r.metrics["latency_ms"]
            out[r.device] = {"p50": lat["p50"], "p90": lat["p90"], "n": lat.get("n"),
                             "threads": r.metrics.get("threads"), "source": f"run {r.run_id}"}
    for rec in res.profiles:
        dev = (rec.get("profiling") or {}).get("device") or rec.get("device")
        if rec.get("suite") == suite and rec.get("method") == method and rec.get("latency_ms") and dev \
                and dev not in out:
            lat = rec["latency_ms"]
            out[dev] = {"p50": lat["p50"], "p90": lat["p90"], "n": lat.get("n"),
                        "threads": (rec.get("profiling") or {}).get("threads"),
                        "source": f"profile record {rec['_path']}"}
    return out


def teacher_run(res: Results, run: Run) -> Run | None:
    """The teacher's run to pair with — a run of the very teacher weights this run's policy came from
    (``teacher_weights_sha256_12``; none if that teacher has no complete run: a student of a retrained teacher is
    not compared with the new one). Runs that predate the field pair with teacher runs started no later than
    themselves (the teacher that existed then), falling back to any. Among those: the same profile (latest
    complete), else the run sharing the most episode ids."""
    t = run.teacher
    if not t or t == run.method:
        return None
    cands = [r for r in res.runs if r.suite == run.suite and r.method == t and r.complete]
    if run.teacher_weights:
        cands = [r for r in cands if r.weights == run.teacher_weights]
    else:
        started = run.run.get("started_at") or ""
        earlier = [r for r in cands if (r.run.get("started_at") or "") <= started]
        cands = earlier or cands
    same = [r for r in cands if r.profile == run.profile]
    if same:
        return max(same, key=lambda r: r.updated_at)
    ids = set(run.outcomes())
    scored = [(len(ids & set(r.outcomes())), r.updated_at, r) for r in cands]
    scored = [c for c in scored if c[0] > 0]
    return max(scored, key=lambda c: (c[0], c[1]))[2] if scored else None


def row_for(res: Results, sel: Selection, devices: list[dict], measured_devices: list[str]) -> dict[str, Any]:
    r = sel.run
    m = r.metrics or {}
    lo, hi = r.success_ci95
    vt = m.get("vs_teacher") or {}
    sp = run_speedup(m)
    row: dict[str, Any] = {
        "suite": r.suite, "method": r.method, "method_name": r.method_name, "variant": r.variant or "",
        "profile": r.profile, "reportable": r.reportable, "complete": r.complete,
        "n_episodes": r.n, "n_errors": sum(1 for e in r.episodes if e["error"] is not None),
        "successes": r.successes, "success_rate": r.success_rate, "success_lo": lo, "success_hi": hi,
        "gflops_per_call": m.get("gflops_per_call"), "gflops_per_action": m.get("gflops_per_action"),
        "params": m.get("params"), "teacher": r.teacher or "",
        "speedup": sp["value"] if sp else None,
        "speedup_lo": sp["ci95"][0] if sp and sp["ci95"] else None,
        "speedup_hi": sp["ci95"][1] if sp and sp["ci95"] else None,
        "flops_ratio": vt.get("flops_ratio"),
    }
    lat = measured_latency(res, sel)
    for dev in measured_devices:
        d = lat.get(dev) or {}
        row[f"latency_p50_ms[{dev}]"] = d.get("p50")
        row[f"latency_p90_ms[{dev}]"] = d.get("p90")
        row[f"latency_p50_ci_halfwidth_ms[{dev}]"] = median_halfwidth(d) if d else None
    nbytes, how = bytes_per_call(m, r.run)
    row["bytes_per_call"] = nbytes
    row["bytes_assumption"] = how
    for dev in devices:
        p = project(dev, m.get("gflops_per_call"), nbytes)
        row[f"projected_ms[{dev['name']}]"] = p["ms"] if p else None
        row[f"projected_bound[{dev['name']}]"] = p["bound"] if p else None
    t = teacher_run(res, r)
    if t is not None:
        pd = paired_vs(t.outcomes(), r.outcomes())
        row.update({"vs_teacher_diff_pp": pd["diff"] * 100 if pd["n"] else None,
                    "vs_teacher_diff_lo_pp": pd["ci95"][0] * 100 if pd["n"] else None,
                    "vs_teacher_diff_hi_pp": pd["ci95"][1] * 100 if pd["n"] else None,
                    "vs_teacher_p_mcnemar": pd["p_mcnemar"] if pd["n"] else None,
                    "vs_teacher_shared": pd["n"], "teacher_run": t.run_id})
    else:
        row.update({"vs_teacher_diff_pp": None, "vs_teacher_diff_lo_pp": None, "vs_teacher_diff_hi_pp": None,
                    "vs_teacher_p_mcnemar": None, "vs_teacher_shared": 0, "teacher_run": ""})
    for k, v in sorted((m.get("suite_metrics") or {}).items()):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            row[f"suite:{k}"] = v
    row.update({"run_id": r.run_id, "updated_at": r.updated_at, "device": r.device,
                "runs_note": sel.note, "n_runs": len(sel.all_runs)})
    return row


def measured_devices_for(res: Results, suite: str) -> list[str]:
    devs: set[str] = set()
    for sel in res.selected(suite):
        devs |= set(measured_latency(res, sel))
    return sorted(devs, key=lambda d: (d != "cpu", d))


def leaderboard(res: Results, suite: str, devices: list[dict] | None = None) -> list[dict[str, Any]]:
    """Rows for every (method, profile) of ``suite``, best success first. Partial runs are included and
    flagged ``complete=False`` (the site lists them apart)."""
    devices = projected_devices() if devices is None else devices
    mdevs = measured_devices_for(res, suite)
    rows = [row_for(res, sel, devices, mdevs) for sel in res.selected(suite)]
    teachers = {r["teacher"] for r in rows if r["teacher"]}
    for r in rows:
        r["is_teacher"] = r["method"] in teachers
    return sorted(rows, key=lambda x: (not x["complete"], -(x["success_rate"] or 0), x["method"], x["profile"]))


def per_task_matrix(res: Results, suite: str) -> tuple[list[str], list[dict[str, Any]]]:
    """(tasks, rows): one row per complete (method, profile) with each task's success rate and n."""
    rows, tasks = [], set()
    for sel in res.selected(suite):
        if not sel.complete:
            continue
        pt = sel.run.per_task()
        tasks |= set(pt)
        rows.append({"method": sel.run.method, "profile": sel.run.profile, "reportable": sel.run.reportable,
                     "tasks": pt})
    return sorted(tasks), sorted(rows, key=lambda r: (r["method"], r["profile"]))
