"""PNG figures of the gradient flow (matplotlib's object API, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

#: W&B keys of the figures a training run logs
LINE_KEY, HEATMAP_KEY = "gradflow/grad_h_plot", "gradflow/heatmap"


def _floor(values: ArrayLike) -> np.ndarray:
    """Values ready for a log axis: zeros (and NaN) lifted to just below the
    smallest positive value."""
    array = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0, posinf=np.finfo(float).max)
    positive = array[array > 0]
    return np.maximum(array, positive.min() * 1e-3 if positive.size else 1e-30)


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    """Write the PNG whole or not at all (a reader never sees half a figure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    fig.savefig(partial, dpi=dpi, format="png")
    os.replace(partial, path)
    return path


def line_plot(path: Path, curves: Mapping[str, Sequence[float]], step: int) -> Path:
    """``log10 ||dL/dh_t||`` over time steps t, one line per layer and direction
    (``curves``: a probe's ``per_step``; log10 values on a linear axis: the same
    scale as the heatmap, and quicker to draw than a log axis)."""
    fig = Figure(figsize=(6, 3.5))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.14, top=0.91)
    ax = fig.add_subplot()
    for key, curve in curves.items():
        ax.plot(np.log10(_floor(curve)), label=key)
    ax.set_xlabel("time step t")
    ax.set_ylabel("log10 ||dL/dh_t||")
    ax.set_title(f"gradient reaching each step (probe at training step {step})")
    ax.legend(fontsize=7)
    return _save(fig, path, dpi=80)


def heatmap(path: Path, rows: Sequence[Sequence[float]], steps: Sequence[int]) -> Path:
    """``log10 ||dL/dh_t||`` of the first layer: time step (y) by training step (x)."""
    width = max(len(r) for r in rows)
    grid = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        grid[i, : len(r)] = np.log10(_floor(r))
    fig = Figure(figsize=(6, 3.5))
    fig.subplots_adjust(left=0.1, right=0.99, bottom=0.14, top=0.91)
    ax = fig.add_subplot()
    half = (steps[-1] - steps[0]) / max(len(steps) - 1, 1) / 2 if len(steps) > 1 else 0.5
    image = ax.imshow(
        grid.T,
        aspect="auto",
        origin="lower",
        cmap="viridis",
        interpolation="nearest",
        extent=(steps[0] - half, steps[-1] + half, 0, width),
    )
    fig.colorbar(image, ax=ax, label="log10 ||dL/dh_t||")
    ax.set_xlabel("training step")
    ax.set_ylabel("time step t")
    ax.set_title("gradient flow over training (layer 0)")
    return _save(fig, path, dpi=80)


def gradflow_figures(
    folder: Path,
    curves: Mapping[str, Sequence[float]],
    step: int,
    rows: Sequence[Sequence[float]],
    steps: Sequence[int],
) -> dict[str, Path]:
    """A run's two gradient-flow figures in ``folder``: the line plot of the probe
    at ``step`` (its ``per_step`` curves) and the heatmap of every probe so far
    (``rows``, the first layer's curves, at ``steps``). Returns ``{W&B key: path}``."""
    return {
        LINE_KEY: line_plot(folder / "grad_h.png", curves, step),
        HEATMAP_KEY: heatmap(folder / "heatmap.png", rows, steps),
    }


def reach_figure(
    path: Path, curves: Mapping[str, Sequence[float]], title: str, floor: float = 1e-12
) -> Path:
    """``||dL_T/dh_t||`` against the distance T - t, normalised to 1 at the loss
    step, log scale down to ``floor``, one line per label (a line ends where its
    gradient is exactly zero); dashed and dotted lines mark the 10x and 1000x drops
    that define reach10 and reach1000."""
    fig = Figure(figsize=(7, 4.5))
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.11, top=0.9)
    draw_reach(fig.add_subplot(), curves, title, floor)
    return _save(fig, path, dpi=90)


def draw_reach(
    ax: Axes,
    curves: Mapping[str, Sequence[float]],
    title: str,
    floor: float = 1e-12,
    colors: Mapping[str, str] | None = None,
) -> None:
    """The curves of :func:`reach_figure`, drawn on ``ax``."""
    for label, curve in curves.items():
        values = np.asarray(curve, dtype=float)[::-1]
        values = values / values[0] if values.size and values[0] > 0 else values
        color = colors.get(label) if colors else None
        y = np.where(values > 0, values, np.nan)
        ax.semilogy(np.arange(values.size), y, label=label, color=color)
    ax.axhline(0.1, color="grey", lw=0.8, ls="--", label="10x below (reach10)")
    ax.axhline(0.001, color="grey", lw=0.8, ls=":", label="1000x below (reach1000)")
    ax.set_ylim(floor, 2.0)
    ax.set_xlabel("distance T - t (steps back from the loss)")
    ax.set_ylabel("||dL_T/dh_t|| / ||dL_T/dh_T||")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
