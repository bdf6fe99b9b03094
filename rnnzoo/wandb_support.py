"""W&B details of the tracker: the mode a run reports in, and what it hands W&B
beyond scalars (table cells, line charts) and prints (the run's address)."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from typing import Any


def choose_mode(configured: str) -> str:
    """``WANDB_MODE`` when set; under a W&B sweep agent (``WANDB_SWEEP_ID`` set)
    ``online``, since the sweep learns of its runs only through the server; else
    ``tracking.wandb_mode``."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_SWEEP_ID") else configured


def cell(value: Any) -> Any:
    """A table cell: non-finite floats become empty (None), as W&B tables want."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass
class Histogram:
    """The values of a logged tensor, which W&B shows as a histogram."""

    values: Any  # a numpy array


def plain(value: Any) -> Any:
    """A logged value as the W&B process takes it without importing torch: a
    one-element tensor as its number, another tensor as a :class:`Histogram`."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, torch.Tensor):
        return value
    value = value.detach().cpu()
    if value.numel() == 1:
        return value.item()
    return Histogram((value.float() if value.is_floating_point() else value).numpy())


def from_plain(value: Any) -> Any:
    """What :func:`plain` made, as W&B logs it (in the W&B process)."""
    if isinstance(value, Histogram):
        import wandb

        return wandb.Histogram(value.values)
    return value


def line_chart(columns: list[str], rows: list[list[Any]], x: str, y: str, series: str) -> Any:
    """A W&B line chart of column ``y`` against ``x``, one line per ``series`` value."""
    import wandb

    ix, iy, iseries = (columns.index(c) for c in (x, y, series))
    lines: dict[Any, list[tuple[Any, Any]]] = {}
    for row in rows:
        if row[ix] is not None and row[iy] is not None:
            lines.setdefault(row[iseries], []).append((row[ix], row[iy]))
    points = [sorted(p) for p in lines.values()]
    return wandb.plot.line_series(
        xs=[[p[0] for p in line] for line in points],
        ys=[[p[1] for p in line] for line in points],
        keys=[str(k) for k in lines],
        title=f"{y} by {x}",
        xname=x,
    )


def address(run: Any) -> str | None:
    """The W&B run's address when it reports online, else None."""
    if getattr(run, "offline", True) or getattr(run, "disabled", False):
        return None
    return run.url or None


def announce(url: str | None) -> None:
    """One line on stderr with the W&B run's address, when there is one."""
    if url:
        print(f"rnnzoo: W&B run {url}", file=sys.stderr, flush=True)
