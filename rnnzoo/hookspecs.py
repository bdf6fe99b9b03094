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

    from rnnzoo.trainer import Trainer

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
    Declare ``derivative_range`` so gradient-flow statistics can say whether the
    activation can amplify the gradient.

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


@hookspec
def rnnzoo_train_start(trainer: Trainer) -> None:
    """Called once before the first training step (also after ``--resume``).

    :param trainer: the running :class:`rnnzoo.trainer.Trainer`; its ``model``,
        ``task``, ``cfg`` (the experiment config) and ``run_dir`` are set, and
        ``trainer.step`` is the step training starts from.
    """


@hookspec
def rnnzoo_after_backward(trainer: Trainer, step: int) -> None:
    """Called after the gradients of a training step are computed (all micro-batches)
    and before any gradient controller shapes them.

    :param trainer: the running trainer; the raw gradients are in ``p.grad`` of
        ``trainer.model.parameters()``.
    :param step: the index of this training step, counted from 0 (the number of
        optimizer steps taken before it).
    """


@hookspec
def rnnzoo_step_end(trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
    """Called after the optimizer step of each training step.

    :param trainer: the running trainer.
    :param step: the number of optimizer steps taken so far, this one included.
    :param metrics: this step's values, such as ``train/loss`` and ``train/lr``,
        plus what the gradient controllers report (``grad/norm_preclip``, ...).
    """


@hookspec
def rnnzoo_eval_end(trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
    """Called after each evaluation on the validation set.

    :param trainer: the running trainer.
    :param step: the number of optimizer steps taken before the evaluation.
    :param metrics: the validation metrics, such as ``val/loss`` and ``val/acc``.
    """


@hookspec
def rnnzoo_train_end(trainer: Trainer, summary: dict[str, float]) -> None:
    """Called once when training ends, normally or by early stopping.

    :param trainer: the trainer that ran; its last checkpoint is written.
    :param summary: the final values, also written to ``summary.json`` in the run
        folder.
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
