"""``compare.png``: three panels, one line per configuration (finished runs only):
the main metric over training, the gradient's reach back in time at the first
probe, and reach10 over training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rnnzoo.compare import Configuration
from rnnzoo.gradflow_demo import geometric_mean
from rnnzoo.plots import draw_reach
from rnnzoo.runfiles import number


def series(rows: Sequence[dict[str, Any]], key: str) -> dict[int, float]:
    """``{step: value}`` of ``key`` in logged rows."""
    out = {}
    for row in rows:
        value = number(row.get(key))
        if value is not None and "step" in row:
            out[int(row["step"])] = value
    return out


def band(ax: Axes, runs: list[dict[int, float]], label: str, color: str) -> None:
    """Mean over seeds as a line, min to max shaded, at every step any run logged."""
    steps = sorted({s for run in runs for s in run})
    if not steps:
        return
    values = [[run[s] for run in runs if s in run] for s in steps]
    ax.plot(steps, [float(np.mean(v)) for v in values], label=label, color=color)
    if len(runs) > 1:
        low, high = [min(v) for v in values], [max(v) for v in values]
        ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)


def first_probe_curve(probes: list[dict[str, Any]]) -> list[float] | None:
    if not probes:
        return None
    curve = probes[0].get("grad_h_last_loss", {}).get("layer0/dir0")
    if not curve:
        return None
    return [v if (v := number(x)) is not None else 0.0 for x in curve]


def figure(path: Path, confs: list[Configuration], key: str) -> Path:
    fig = Figure(figsize=(16, 4.8))
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.12, top=0.88, wspace=0.28)
    metric_ax, reach_ax, over_ax = fig.subplots(1, 3)
    curves: dict[str, list[float]] = {}
    colors: dict[str, str] = {}
    first_steps: set[int] = set()
    baselines = set()
    for i, conf in enumerate(c for c in confs if c.finished):
        color = f"C{i % 10}"
        colors[conf.label] = color
        runs = conf.finished
        band(metric_ax, [series(r.metrics(), key) for r in runs], conf.label, color)
        probes = [r.probes() for r in runs]
        band(over_ax, [series(p, "gradflow/reach10") for p in probes], conf.label, color)
        found = [c for p in probes if (c := first_probe_curve(p))]
        if found:
            curves[conf.label] = geometric_mean(found)
            first_steps |= {int(p[0]["step"]) for p in probes if p}
        baselines |= {
            b
            for r in runs
            if (b := number((r.summary or {}).get(f"baseline/{key.removeprefix('val/')}")))
        }
    if len(baselines) == 1:
        metric_ax.axhline(baselines.pop(), color="grey", ls="--", lw=0.8, label="baseline")
    values = [v for line in metric_ax.get_lines() for v in np.asarray(line.get_ydata(), float)]
    if values and min(values) > 0 and max(values) / min(values) > 30:
        metric_ax.set_yscale("log")
    metric_ax.set(xlabel="training step", ylabel=key, title=f"{key} (mean over seeds, min–max)")
    metric_ax.legend(fontsize=8)
    at = ", ".join(map(str, sorted(first_steps))) or "–"
    if curves:
        lowest = [v[0] / v[-1] for c in curves.values() if (v := [x for x in c if x > 0])]
        draw_reach(
            reach_ax,
            curves,
            f"gradient of the last loss reaching back, first probe (step {at});\n"
            "geometric mean over seeds",
            floor=min(max(min(lowest, default=1e-12) / 3, 1e-12), 1e-4),
            colors=colors,
        )
    else:
        reach_ax.set_title("no gradient-flow probes logged (gradflow.every=0)", fontsize=9)
    over_ax.set(
        xlabel="training step",
        ylabel="reach10 (steps)",
        title="reach10 over training (mean over seeds, min–max)",
    )
    over_ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path
