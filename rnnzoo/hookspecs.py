"""Every hook of rnnzoo, in one file. The docstrings are the documentation.

A plugin is a module or object with functions named like these hooks and marked
with ``@rnnzoo.hookimpl``. Registration hooks return ``{name: factory}``; a factory
is a class (or function) whose typed keyword parameters with defaults are the
component's settings, shown by ``rnnzoo describe NAME`` and validated against the
experiment config. Event hooks return nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from rnnzoo.trainer import Trainer

hookspec = pluggy.HookspecMarker("rnnzoo")


# -- registration -------------------------------------------------------------


@hookspec
def rnnzoo_cells() -> dict[str, Callable[..., Any]]:
    """Register recurrent cells.

    Return ``{name: cls}`` where ``cls`` subclasses :class:`rnnzoo.Cell` and is
    called as ``cls(input_size, hidden_size, **params)``. If its signature has an
    ``activation`` parameter, it receives the activation plugin chosen by
    ``model.activation``. Example: ``{"elman": ElmanCell}``.
    """


@hookspec
def rnnzoo_activations() -> dict[str, Callable[..., Any]]:
    """Register activation functions.

    Return ``{name: cls}`` where ``cls`` subclasses :class:`rnnzoo.Activation`
    and is called with its own keyword parameters only (for example
    ``negative_slope``). Declare ``derivative_range`` so gradient-flow statistics
    can say whether the activation can amplify the gradient.
    """


@hookspec
def rnnzoo_grad_controllers() -> dict[str, Callable[..., Any]]:
    """Register gradient controllers (clipping, truncated BPTT, ...).

    Return ``{name: cls}`` where ``cls`` subclasses :class:`rnnzoo.GradController`
    and is called with its keyword parameters from ``controllers.<name>``.
    """


@hookspec
def rnnzoo_heads() -> dict[str, Callable[..., Any]]:
    """Register heads: recurrent outputs to predictions and a loss.

    Return ``{name: cls}`` where ``cls`` subclasses :class:`rnnzoo.Head` and is
    called as ``cls(input_size, spec, **params)`` with the task's
    :class:`rnnzoo.TaskSpec`.
    """


@hookspec
def rnnzoo_tasks() -> dict[str, Callable[..., Any]]:
    """Register tasks: data, targets, metrics and a trivial baseline.

    Return ``{name: cls}`` where ``cls`` subclasses :class:`rnnzoo.Task` and is
    called with its keyword parameters from ``task.*`` plus ``seed``.
    """


# -- training events ----------------------------------------------------------


@hookspec
def rnnzoo_train_start(trainer: Trainer) -> None:
    """Called once before the first training step (also after ``--resume``).

    ``trainer.model``, ``trainer.task``, ``trainer.config`` and ``trainer.run_dir``
    are set; ``trainer.step`` is the step training starts from.
    """


@hookspec
def rnnzoo_after_backward(trainer: Trainer, step: int) -> None:
    """Called after the gradients of training step ``step`` are computed and
    before any gradient controller shapes them: the raw gradients are in
    ``p.grad`` of ``trainer.model.parameters()``."""


@hookspec
def rnnzoo_step_end(trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
    """Called after the optimizer step of ``step`` with that step's logged values
    (keys such as ``train/loss``, ``grad/norm_preclip``, ``clip/rate``)."""


@hookspec
def rnnzoo_eval_end(trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
    """Called after each evaluation with its metrics (keys such as ``val/loss``,
    ``val/acc``)."""


@hookspec
def rnnzoo_train_end(trainer: Trainer, summary: dict[str, float]) -> None:
    """Called once when training ends, normally or by early stopping, with the
    final summary that is also written to ``summary.json``."""


# -- command line -------------------------------------------------------------


@hookspec
def rnnzoo_add_commands(cli: click.Group) -> None:
    """Add click commands to the ``rnnzoo`` command line with ``cli.add_command``."""
