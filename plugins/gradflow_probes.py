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

Where a probe runs (``gradflow.process``): with ``auto``, the default, a CPU run
that leaves a core free and probes at least :data:`AUTO_PROBES` times starts the
probe process (:mod:`rnnzoo.probe_process`); each probe then runs where it cost the
training thread less when last tried there (:class:`~rnnzoo.probe_process.Placement`):
in training, or handed to the process with the step's weights. ``always`` hands every
probe over, ``never`` none; the last probe, those while the process starts and one
at a step where training stops run in training. A probe handed over is logged under
its step at the end of the first step by which its answer is in, waited for at the
latest at the end of a step after which the trainer logs, evaluates, saves a
checkpoint or stops (this hook runs first), and on Ctrl-C before training stops.

Of the run, it uses only what :class:`rnnzoo.events.TrainingRun` offers a plugin.
"""

from __future__ import annotations

import json
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from rnnzoo import gradflow, hookimpl
from rnnzoo.events import TrainingRun, busy_every
from rnnzoo.gradflow_figures import GradflowFigures
from rnnzoo.model import RNNModel
from rnnzoo.probe_process import Placement, ProbeProcess, ProbeProcessError
from rnnzoo.task import Batch
from rnnzoo.threads import available_cores
from rnnzoo.training.progress import say
from rnnzoo_plugins.gradflow_table import COLUMNS, TABLE, TABLE_SHARE, table_rows

RECORDS = "gradflow.jsonl"
#: seconds to wait for the probe process to start (``always``) or to answer; a
#: probe of a small model takes milliseconds, of a large one on a busy machine seconds
ANSWER_WAIT = 120.0
#: with ``gradflow.process=auto``, the probes a CPU run must have ahead of it to
#: start the probe process: starting it costs about a second of a core (torch is
#: imported there), which a handful of probes of a small model do not pay back
AUTO_PROBES = 10


@dataclass
class _Pending:
    """A probe in flight in the probe process."""

    step: int
    #: the gradient norms of its step, before and after the controllers
    norms: dict[str, float]
    #: seconds of the training thread spent on it: the hand-over, looks and wait
    handing: float


@dataclass
class _Probes:
    every: int
    figures: GradflowFigures
    #: ``gradflow.process``: auto, always or never
    where: str
    #: ``trainer.steps``: the last probe runs here, as nothing follows it to wait for
    last: int
    #: gradient norms of the step being probed, before and after the controllers
    norms: dict[str, float] = field(default_factory=dict)
    process: ProbeProcess | None = None
    pending: _Pending | None = None
    #: with ``auto``: here or aside, whichever costs training less
    placement: Placement = field(default_factory=Placement)
    #: a probe in flight is waited for at multiples of these (:func:`busy_every`)
    settle_every: tuple[int, ...] = ()


_active: weakref.WeakKeyDictionary[Any, _Probes] = weakref.WeakKeyDictionary()


def in_flight(run: TrainingRun) -> bool:
    """Whether a probe of ``run`` is with the probe process, its answer not yet logged."""
    probes = _active.get(run)
    return probes is not None and probes.pending is not None


def _due(run: TrainingRun, step: int) -> _Probes | None:
    """The run's probes if ``step`` (steps taken after this one) is a probe step."""
    probes = _active.get(run)
    return probes if probes is not None and step % probes.every == 0 else None


@hookimpl
def rnnzoo_train_start(run: TrainingRun) -> None:
    settings, t = run.config.gradflow, run.config.trainer
    every = int(settings.every)
    if every <= 0 or run.rank != 0:  # data-parallel: rank 0 probes for all
        return
    figures = GradflowFigures(run.run_dir / "gradflow")
    records = run.run_dir / RECORDS
    recorded: set[int] = set()
    if records.is_file():  # a resumed run: the heatmap goes on from its probes so far
        rows = [json.loads(line) for line in records.read_text().splitlines() if line]
        figures.load_state_dict(
            {"rows": [r["grad_h"]["layer0/dir0"] for r in rows], "steps": [r["step"] for r in rows]}
        )
        recorded = {r["step"] for r in rows}
    probes = _active[run] = _Probes(every, figures, str(settings.process), int(t.steps))
    probes.settle_every = busy_every(run.config)
    if run.step > 0 and run.step % every == 0 and run.step not in recorded:
        # resumed at a probe step whose probe never arrived (the run was killed
        # while the probe process had it): the checkpoint holds the step's weights
        _record(run, probes, run.step, {}, _probe_here(run))
    planned = (probes.last - run.step) // every
    # threads "auto" may settle on fewer threads than cores once training runs
    free = torch.get_num_threads() < available_cores() or t.threads == "auto"
    auto = probes.where == "auto" and planned >= AUTO_PROBES and free
    if (probes.where == "always" or auto) and run.device.type == "cpu":  # CUDA: stay
        try:  # it starts while training does, and probes once it is ready
            probes.process = ProbeProcess(_model(run))
        except Exception as exc:  # OSError, or a model that cannot be pickled
            _fall_back(probes, f"the probe process could not start ({exc})")


@hookimpl
def rnnzoo_after_backward(run: TrainingRun, step: int) -> None:
    if (probes := _due(run, step + 1)) is not None:
        probes.norms = gradflow.parameter_grad_norms(run.model, "grad/preclip")


@hookimpl
def rnnzoo_before_optimizer_step(run: TrainingRun, step: int) -> None:
    if (probes := _due(run, step + 1)) is not None:
        probes.norms.update(gradflow.parameter_grad_norms(run.model, "grad/postclip"))


@hookimpl(tryfirst=True)  # before other plugins log this step: a late probe goes first
def rnnzoo_step_end(run: TrainingRun, step: int) -> None:
    probes = _active.get(run)
    if probes is None:
        return
    _collect(run, probes, wait=_settles(run, probes, step))
    if drawn := probes.figures.collect():  # a drawing finished since the last step
        run.log_images(drawn)
    if step % probes.every:
        return
    norms, probes.norms = probes.norms, {}
    if step < probes.last and not run.stopping and _aside(probes):
        assert probes.process is not None
        started = time.perf_counter()
        try:
            probes.process.probe(
                step, _model(run), _probe_batch(run), run.config.gradflow.loss_step
            )
            probes.pending = _Pending(step, norms, time.perf_counter() - started)
            return
        except Exception as exc:  # the process is gone, or the weights do not pack
            _fall_back(probes, f"handing over the probe failed ({exc})")
    started, counted = time.perf_counter(), probes.process is not None and probes.process.ready
    result = _probe_here(run)
    if counted:  # not while the process starts: the first probes are the slowest
        probes.placement.record("here", time.perf_counter() - started)
    _record(run, probes, step, norms, result)


@hookimpl
def rnnzoo_train_end(run: TrainingRun) -> None:
    if (probes := _stop(run)) is not None and (images := probes.figures.finish()):
        run.log_images(images)


@hookimpl
def rnnzoo_train_interrupted(run: TrainingRun) -> None:
    _stop(run)  # a signal that came after this step's look for the answer


def _stop(run: TrainingRun) -> _Probes | None:
    """Log the probe in flight and close the probe process; the run's probes."""
    probes = _active.pop(run, None)
    if probes is not None:
        _collect(run, probes)
        if probes.process is not None:
            probes.process.close()
    return probes


def _model(run: TrainingRun) -> RNNModel:
    model = run.model
    assert isinstance(model, RNNModel)
    return model


def _probe_batch(run: TrainingRun) -> Batch:
    """The probe's batch: the first ``gradflow.batch_size`` validation sequences."""
    return next(iter(run.task.val_batches(run.config.gradflow.batch_size)))


def _probe_here(run: TrainingRun) -> gradflow.GradflowResult:
    """Probe in the training process."""
    batch = _probe_batch(run).to(run.device)
    return gradflow.probe(_model(run), batch, run.config.gradflow.loss_step)


def _aside(probes: _Probes) -> bool:
    """Whether this probe goes to the probe process: it has started (``always``
    waits for it) and, for ``auto``, training leaves a core free."""
    if probes.process is None:
        return False
    try:
        wait = ANSWER_WAIT if probes.where == "always" else 0.0
        if not probes.process.wait_ready(wait):
            if probes.where == "always":
                raise ProbeProcessError(f"it did not start within {ANSWER_WAIT:.0f} s")
            return False
    except ProbeProcessError as exc:
        _fall_back(probes, f"the probe process failed ({exc})")
        return False
    if probes.where == "always":
        return True
    free = torch.get_num_threads() < available_cores()
    return free and probes.placement.choose() == "aside"


def _settles(run: TrainingRun, probes: _Probes, step: int) -> bool:
    """Whether a probe in flight is waited for at the end of ``step``: the trainer
    logs, evaluates, checkpoints or stops after it, or the next probe is due."""
    return probes.pending is not None and (
        run.stopping or step >= probes.last or any(step % n == 0 for n in probes.settle_every)
    )


def _collect(run: TrainingRun, probes: _Probes, wait: bool = True) -> None:
    """Log the probe in flight, if any, once its answer is in (``wait``: wait for it)."""
    pending = probes.pending
    if pending is None or probes.process is None:
        probes.pending = None
        return
    started = time.perf_counter()
    try:
        answer = probes.process.answer(ANSWER_WAIT if wait else 0.0)
        if answer is None and wait:
            raise ProbeProcessError(f"no answer within {ANSWER_WAIT:.0f} s")
    except ProbeProcessError as exc:
        probes.pending = None
        _fall_back(
            probes, f"the probe process failed ({exc}); the probe of step {pending.step} is lost"
        )
        return
    pending.handing += time.perf_counter() - started  # training's time on it so far
    if answer is None:
        return
    probes.pending = None
    probes.placement.record("aside", pending.handing + probes.process.shared_core)
    step, result = answer
    _record(run, probes, step, pending.norms, result)


def _fall_back(probes: _Probes, why: str) -> None:
    """Probe in the training process from now on, and say why."""
    if probes.process is not None:
        probes.process.close()
    probes.process, probes.where = None, "never"
    say(f"gradient-flow probes: {why}; they run in the training process from now on")


def _record(
    run: TrainingRun,
    probes: _Probes,
    step: int,
    norms: dict[str, float],
    result: gradflow.GradflowResult,
) -> None:
    """Log the probe of ``step``: scalars, its record, its table rows, figures."""
    run.log({**result.scalars, **norms}, step=step)
    with open(run.run_dir / RECORDS, "a", encoding="utf-8") as f:
        f.write(json.dumps(gradflow.as_record(step, result)) + "\n")
    rows = table_rows(step, result, str(run.config.model.cell))
    line = ("distance", "grad_h_last_loss", "curve")
    run.log_table(TABLE, COLUMNS, rows, line=line, share=TABLE_SHARE, step=step)
    if images := probes.figures.add(step, result):  # drawn aside, within a budget
        run.log_images(images)
