"""Gradient-flow probes during training, as a plugin on the event hooks.

Every ``gradflow.every`` steps the probe (:func:`rnnzoo.gradflow.probe`) runs the
model on ``gradflow.batch_size`` validation sequences through the step loop,
recording every state ``h_t``, and measures

    ||dL/dh_t||  and  ||dL_T/dh_t|| = ||dL_T/dh_T * prod_{k=t+1..T} dh_k/dh_{k-1}||,

the reach and decay of the gradient, the activations' mean derivative and the
recurrent matrices' largest singular value. The values go to ``metrics.jsonl`` and
W&B with the per-parameter gradient norms before (``grad/preclip/*``) and after
(``grad/postclip/*``) the gradient controllers; the curves go to
``gradflow.jsonl`` and, as data runs compare, to the W&B table ``gradflow/curves``
(one row per curve and time step, :data:`COLUMNS`) with its line chart
``gradflow/curves_plot`` (``||dL_T/dh_t||`` against the distance T - t); the line
plot and heatmap to ``gradflow/`` and W&B images, drawn by the figure process
(:mod:`rnnzoo.gradflow_figures`) while training goes on, and logged once drawn.
Tables and figures stay within 1 % of the run's time each: a probe whose table
would exceed it has its rows sent with a later probe's table (each row names its
probe's step), or at the end; a probe whose figures would exceed it is drawn
later, or at the end.

It uses only what :class:`rnnzoo.events.TrainingRun` offers a plugin.
"""

from __future__ import annotations

import json
import re
import weakref
from dataclasses import dataclass, field
from typing import Any

from rnnzoo import gradflow, hookimpl
from rnnzoo.events import TrainingRun
from rnnzoo.gradflow_figures import GradflowFigures
from rnnzoo.model import RNNModel

RECORDS = "gradflow.jsonl"
#: the W&B table of every probe: its step, the time step t, the distance T - t to
#: the loss step T (empty after it), ||dL/dh_t||, ||dL_T/dh_t|| (forward directions,
#: t <= T), the layer, the direction (0 forward, 1 backward), the cell, and the
#: curve's key in gradflow.jsonl
COLUMNS = (
    "step", "t", "distance", "grad_h", "grad_h_last_loss", "layer", "direction", "cell", "curve"
)  # fmt: skip
TABLE = "gradflow/curves"
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


@dataclass
class _Probes:
    every: int
    figures: GradflowFigures
    #: gradient norms of the step being probed, before and after the controllers
    norms: dict[str, float] = field(default_factory=dict)


_active: weakref.WeakKeyDictionary[Any, _Probes] = weakref.WeakKeyDictionary()


def _due(run: TrainingRun, step: int) -> _Probes | None:
    """The run's probes if ``step`` (steps taken after this one) is a probe step."""
    probes = _active.get(run)
    return probes if probes is not None and step % probes.every == 0 else None


@hookimpl
def rnnzoo_train_start(run: TrainingRun) -> None:
    every = int(run.config.gradflow.every)
    if every <= 0 or run.rank != 0:  # data-parallel: rank 0 probes for all
        return
    figures = GradflowFigures(run.run_dir / "gradflow")
    records = run.run_dir / RECORDS
    if records.is_file():  # a resumed run: the heatmap goes on from its probes so far
        rows = [json.loads(line) for line in records.read_text().splitlines() if line]
        figures.load_state_dict(
            {"rows": [r["grad_h"]["layer0/dir0"] for r in rows], "steps": [r["step"] for r in rows]}
        )
    _active[run] = _Probes(every, figures)


@hookimpl
def rnnzoo_after_backward(run: TrainingRun, step: int) -> None:
    if (probes := _due(run, step + 1)) is not None:
        probes.norms = gradflow.parameter_grad_norms(run.model, "grad/preclip")


@hookimpl
def rnnzoo_before_optimizer_step(run: TrainingRun, step: int) -> None:
    if (probes := _due(run, step + 1)) is not None:
        probes.norms.update(gradflow.parameter_grad_norms(run.model, "grad/postclip"))


@hookimpl
def rnnzoo_step_end(run: TrainingRun, step: int) -> None:
    probes = _active.get(run)
    if probes is None:
        return
    if drawn := probes.figures.collect():  # a drawing finished since the last step
        run.log_images(drawn)
    if step % probes.every:
        return
    settings = run.config.gradflow
    model = run.model
    assert isinstance(model, RNNModel)
    batch = next(iter(run.task.val_batches(settings.batch_size))).to(run.device)
    result = gradflow.probe(model, batch, settings.loss_step)
    run.log({**result.scalars, **probes.norms})
    probes.norms = {}
    with open(run.run_dir / RECORDS, "a", encoding="utf-8") as f:
        f.write(json.dumps(gradflow.as_record(step, result)) + "\n")
    rows = table_rows(step, result, str(run.config.model.cell))
    line = ("distance", "grad_h_last_loss", "curve")
    run.log_table(TABLE, COLUMNS, rows, line=line, share=TABLE_SHARE)
    images = probes.figures.add(step, result)  # drawn aside, within a time budget
    if images:
        run.log_images(images)


@hookimpl
def rnnzoo_train_end(run: TrainingRun) -> None:
    probes = _active.pop(run, None)
    if probes is not None and (images := probes.figures.finish()):
        run.log_images(images)
