# mypy: disable-error-code="empty-body"
# (hook specifications are never called: their bodies are their docstrings)
"""Every hook of rnnzoo, in one file. The docstrings are the documentation.

A plugin is a module or object with functions named like these hooks and marked
with ``@rnnzoo.hookimpl``. An implementation may take any of its hook's parameters,
by name, and no others; a misspelt hook name or parameter stops rnnzoo with an error
naming the plugin.

Registration hooks return ``{name: factory}``. A factory is a class (or function)
whose typed keyword parameters with defaults are the component's settings: ``rnnzoo
describe NAME`` shows them and the experiment config is validated against them. The
arguments rnnzoo supplies itself (``input_size``, ``seed``, ...) are listed per hook
and are not settings. A name registered by two plugins is an error, never a silent
override.

Event hooks return nothing; they let a plugin watch (or log from) a training run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from rnnzoo.events import TrainingRun

hookspec = pluggy.HookspecMarker("rnnzoo")


# -- registration -------------------------------------------------------------


@hookspec
def rnnzoo_cells() -> dict[str, Callable[..., Any]]:
    """Register recurrent cells.

    Each class subclasses :class:`rnnzoo.Cell` and is called as
    ``cls(input_size, hidden_size, **settings)``; if its signature has an
    ``activation`` parameter, it also receives the activation module chosen by
    ``model.activation`` (with ``model.activation_args``). Settings come from
    ``model.cell_args``.

    :returns: ``{name: cls}``, for example ``{"elman": ElmanCell}``.
    """


@hookspec
def rnnzoo_activations() -> dict[str, Callable[..., Any]]:
    """Register activation functions.

    Each class subclasses :class:`rnnzoo.Activation` and is called with its
    settings only (for example ``negative_slope``), from ``model.activation_args``.
    Declare ``derivative_range = (low, high)``, the interval ``g'(z)`` lies in:
    gradient-flow probes log the bound it puts on ``|g'(z)|`` as
    ``gradflow/act_deriv_bound`` and whether it exceeds 1 as
    ``gradflow/act_can_amplify``; ``rnnzoo describe`` prints
    ``Activation.amplification_note()``. Without it nothing is known and both
    scalars are left out.

    :returns: ``{name: cls}``, for example ``{"tanh": Tanh}``.
    """


@hookspec
def rnnzoo_grad_controllers() -> dict[str, Callable[..., Any]]:
    """Register gradient controllers (clipping, truncated BPTT, ...).

    Each class subclasses :class:`rnnzoo.GradController` and is called with its
    settings from ``controllers.<name>``; controllers run in the order the config
    lists them.

    :returns: ``{name: cls}``, for example ``{"clip_norm": ClipNorm}``.
    """


@hookspec
def rnnzoo_heads() -> dict[str, Callable[..., Any]]:
    """Register heads: recurrent outputs to predictions and a loss.

    Each class subclasses :class:`rnnzoo.Head` and is called as
    ``cls(input_size=..., spec=..., directions=..., **settings)`` with the task's
    :class:`rnnzoo.TaskSpec` (``directions`` only if its signature takes it).
    Settings come from ``model.head_args``.

    :returns: ``{name: cls}``, for example ``{"sequence": SequenceHead}``.
    """


@hookspec
def rnnzoo_tasks() -> dict[str, Callable[..., Any]]:
    """Register tasks: data, targets, metrics and a trivial baseline.

    Each class subclasses :class:`rnnzoo.Task` and is called with ``seed`` (from
    ``trainer.seed``, if its signature takes it) and its settings: every key of
    the ``task`` section except ``name``.

    :returns: ``{name: cls}``, for example ``{"adding": AddingTask}``.
    """


# -- training events ----------------------------------------------------------
# Each receives the run as a :class:`rnnzoo.events.TrainingRun`: its ``config``,
# ``model``, ``task``, ``step`` (optimizer steps taken so far), ``run_dir``,
# ``device``, ``stopping`` (training stops after this step), and ``log(metrics)`` /
# ``log_images(images)`` / ``log_table(key, columns, rows)`` to log beside the run's
# own values (``step=`` for values of an earlier step that arrive late). The
# built-in gradient-flow probes (``rnnzoo_plugins.gradflow_probes``) are a plugin on
# these hooks.


@hookspec
def rnnzoo_train_start(run: TrainingRun) -> None:
    """Called once before the first training step (also after ``--resume``).

    :param run: the training run; ``run.step`` is the step training starts from
        (0, or the resumed checkpoint's step). The run folder is written and
        logging works.
    """


@hookspec
def rnnzoo_after_backward(run: TrainingRun, step: int) -> None:
    """Called after the gradients of a training step are computed (all micro-batches)
    and before any gradient controller shapes them.

    :param run: the training run; the raw gradients are in ``p.grad`` of
        ``run.model.parameters()``.
    :param step: the index of this training step, counted from 0 (the number of
        optimizer steps taken before it).
    """


@hookspec
def rnnzoo_before_optimizer_step(run: TrainingRun, step: int) -> None:
    """Called after the gradient controllers shaped the gradients (clipping) and
    right before the optimizer step. Not called for a step that is skipped because
    its loss or a gradient is not finite.

    :param run: the training run; ``p.grad`` holds the gradients the optimizer
        will apply.
    :param step: the index of this training step, counted from 0.
    """


@hookspec
def rnnzoo_step_end(run: TrainingRun, step: int, metrics: dict[str, float]) -> None:
    """Called after the optimizer step of each training step (before the
    evaluation, logging and checkpoint that may be due at this step).

    :param run: the training run.
    :param step: the number of optimizer steps taken so far, this one included.
    :param metrics: this step's values, such as ``train/loss`` and ``train/lr``,
        plus what the gradient controllers report (``grad/norm_preclip``, ...).
    """


@hookspec
def rnnzoo_eval_end(run: TrainingRun, step: int, metrics: dict[str, float]) -> None:
    """Called after each evaluation on the validation set.

    :param run: the training run.
    :param step: the number of optimizer steps taken before the evaluation.
    :param metrics: the validation metrics, such as ``val/loss`` and ``val/acc``.
    """


@hookspec
def rnnzoo_train_end(run: TrainingRun, summary: dict[str, float]) -> None:
    """Called once when training ends, normally or by early stopping; the tracker
    is still open, so the hook may log.

    :param run: the run that ended; its last checkpoint is written.
    :param summary: the final values, also written to ``summary.json`` in the run
        folder.
    """


@hookspec
def rnnzoo_train_interrupted(run: TrainingRun) -> None:
    """Called once when a signal (Ctrl-C, SIGTERM) stops training before
    ``trainer.steps``, instead of :func:`rnnzoo_train_end`; the tracker is still
    open, so the hook may log what it had in flight.

    :param run: the stopped run; the checkpoint of its last step is written, and
        ``rnnzoo train --resume`` goes on from it.
    """


# -- command line -------------------------------------------------------------


@hookspec
def rnnzoo_add_commands(cli: click.Group) -> None:
    """Add commands to the ``rnnzoo`` command line, before it parses its arguments.

    Plugins from entry points and from ``-p`` options see this hook; plugins named
    only in an experiment's ``plugins:`` list are loaded too late to add commands.

    :param cli: the ``rnnzoo`` :class:`click.Group`; call ``cli.add_command(cmd)``
        or decorate a function with ``@cli.command()``.
    """
