"""The gradient-flow probes' W&B table: one row per curve and time step, so that
runs compare as data (``gradflow/curves``, with its line chart of ``||dL_T/dh_t||``
against the distance T - t)."""

from __future__ import annotations

import re
from typing import Any

from rnnzoo import gradflow

#: the W&B key of the table
TABLE = "gradflow/curves"
#: the columns: the probe's step, the time step t, the distance T - t to
#: the loss step T (empty after it), ||dL/dh_t||, ||dL_T/dh_t|| (forward directions,
#: t <= T), the layer, the direction (0 forward, 1 backward), the cell, and the
#: curve's key in gradflow.jsonl
COLUMNS = (
    "step", "t", "distance", "grad_h", "grad_h_last_loss", "layer", "direction", "cell", "curve"
)  # fmt: skip
#: the share of the run's time W&B may spend on the table, as the figures may on
#: drawing: a table costs W&B about 16 ms, several steps of a small model
TABLE_SHARE = 0.01


def table_rows(step: int, result: gradflow.GradflowResult, cell: str) -> list[list[Any]]:
    """The rows of :data:`COLUMNS` for one probe."""
    rows: list[list[Any]] = []
    T = result.loss_step
    for curve, per_step in result.per_step.items():
        key = re.fullmatch(r"layer(\d+)/dir(\d+)", curve)
        assert key is not None, curve
        layer, direction = map(int, key.groups())
        last = result.last_loss.get(curve, [])
        for t, grad_h in enumerate(per_step):
            rows.append([
                step, t, T - t if t <= T else None, grad_h, last[t] if t < len(last) else None,
                layer, direction, cell, curve,
            ])  # fmt: skip
    return rows
