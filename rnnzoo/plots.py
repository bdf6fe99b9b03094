"""PNG figures of the gradient flow (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rnnzoo.gradflow import GradflowResult  # noqa: E402


def _floor(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    positive = array[array > 0]
    return np.maximum(array, positive.min() * 1e-3 if positive.size else 1e-30)


def gradflow_figures(
    folder: Path, result: GradflowResult, rows: Sequence[Sequence[float]], steps: Sequence[int]
) -> dict[str, Path]:
    """Write the latest ``||dL/dh_t||`` line plot and the heatmap (time step x
    training step) to ``folder``; return ``{log key: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    line = folder / "grad_h.png"
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, curve in result.per_step.items():
        ax.semilogy(_floor(curve), label=key)
    ax.set_xlabel("time step t")
    ax.set_ylabel("||dL/dh_t||")
    ax.set_title(f"gradient reaching each step (probe after step {steps[-1]})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(line, dpi=100)
    plt.close(fig)

    heat = folder / "heatmap.png"
    width = max(len(r) for r in rows)
    grid = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        grid[i, : len(r)] = np.log10(_floor(r))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    image = ax.imshow(
        grid.T, aspect="auto", origin="lower", cmap="viridis",
        extent=(steps[0], steps[-1] if len(steps) > 1 else steps[0] + 1, 0, width),
    )
    fig.colorbar(image, ax=ax, label="log10 ||dL/dh_t||")
    ax.set_xlabel("training step")
    ax.set_ylabel("time step t")
    ax.set_title("gradient flow over training (layer 0)")
    fig.tight_layout()
    fig.savefig(heat, dpi=100)
    plt.close(fig)
    return {"gradflow/grad_h_plot": line, "gradflow/heatmap": heat}


def reach_figure(path: Path, curves: Mapping[str, Sequence[float]], title: str) -> Path:
    """``||dL_T/dh_t||`` against the distance T - t, log scale, one line per label."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curve in curves.items():
        values = np.asarray(curve, dtype=float)[::-1]
        values = values / values[0] if values.size and values[0] > 0 else values
        ax.semilogy(np.arange(values.size), _floor(values), label=label)
    ax.axhline(0.1, color="grey", lw=0.8, ls="--")
    ax.axhline(0.001, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("distance T - t (steps back from the loss)")
    ax.set_ylabel("||dL_T/dh_t|| / ||dL_T/dh_T||")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
