"""Pareto plots (success vs latency, success vs FLOPs) as inline SVG strings, drawn with matplotlib.

Vertical error bars: Wilson 95% interval of the success rate. Horizontal error bars on latency: the 95%
interval of the p50 from the recorded spread (see reports/analysis.py); FLOPs are counted, not sampled,
so they carry none. The frontier joins the points no other point beats on both axes (lower x, higher y).
Hollow markers: non-reportable profiles.
"""
from __future__ import annotations

import io
import math
import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "vla-bench", "font.size": 9})


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points on the frontier (minimise x, maximise y), ordered by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _svg(fig: Any, prefix: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    # ids must be unique within the HTML page that inlines several figures
    ids = set(re.findall(r'id="([^"]+)"', svg))
    for i in sorted(ids, key=len, reverse=True):
        svg = re.sub(rf'(id="|#){re.escape(i)}(["\)])', rf"\g<1>{prefix}-{i}\g<2>", svg)
    return svg.replace("<svg ", f'<svg class="plot" role="img" aria-label="{prefix}" ', 1)


def _success_err(r: dict, y: float) -> list[list[float]]:
    """Error-bar lengths of a success interval; clipped at 0 (for 0/n the stored Wilson bound can exceed 0 by 1e-17,
    and matplotlib rejects a negative length)."""
    return [[max(0.0, y - r["success_lo"])], [max(0.0, r["success_hi"] - y)]]


def pareto_svg(rows: list[dict], x_key: str, x_label: str, title: str, prefix: str,
               x_err_key: str | None = None) -> str | None:
    """None when fewer than one row has both figures (the page says so instead)."""
    keys = sorted({(r["method"], r["profile"]) for r in rows})  # colours stable across the page's plots
    pts = [r for r in rows if r.get(x_key) is not None and r.get("success_rate") is not None and r[x_key] > 0]
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xy = [(r[x_key], r["success_rate"]) for r in pts]
    front = pareto_front(xy)
    fx = [xy[i][0] for i in front]
    fy = [xy[i][1] for i in front]
    ax.step(fx, fy, where="post", color="#888", linestyle="--", linewidth=1, label="Pareto frontier", zorder=1)
    colors = plt.get_cmap("tab10")
    for i, r in enumerate(pts):
        x, y = xy[i]
        yerr = _success_err(r, y)
        xerr = None
        if x_err_key and r.get(x_err_key) is not None:
            xerr = [[r[x_err_key]], [r[x_err_key]]]
        c = colors(keys.index((r["method"], r["profile"])) % 10)
        ax.errorbar([x], [y], yerr=yerr, xerr=xerr, fmt="o", color=c, ecolor=c, elinewidth=1, capsize=3,
                    markerfacecolor=c if r["reportable"] else "white", markersize=7, zorder=3,
                    label=f"{r['method']} [{r['profile']}]" + ("" if r["reportable"] else " (not reportable)"))
        ax.annotate(r["method"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    xs = [p[0] for p in xy]
    if max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("success rate (Wilson 95% CI)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    return _svg(fig, prefix)


def success_svg(rows: list[dict], title: str, prefix: str) -> str | None:
    """Success rate per (method, profile) with Wilson 95% intervals: drawn even when nothing was profiled."""
    pts = [r for r in rows if r.get("success_rate") is not None]
    if not pts:
        return None
    pts = sorted(pts, key=lambda r: r["success_rate"])
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.32 * len(pts)))
    for i, r in enumerate(pts):
        y = r["success_rate"]
        ax.errorbar([y], [i], xerr=_success_err(r, y), fmt="o", color="#2a6fb0",
                    capsize=3, markerfacecolor="#2a6fb0" if r["reportable"] else "white")
    ax.set_yticks(range(len(pts)))
    ax.set_yticklabels([f"{r['method']} [{r['profile']}]" for r in pts], fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("success rate (Wilson 95% CI; hollow: not reportable)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    return _svg(fig, prefix)
