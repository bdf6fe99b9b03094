"""The event contract: what a plugin watching a training run is given.

Event hooks (``rnnzoo_train_start``, ``rnnzoo_after_backward``, ...) receive a
:class:`TrainingRun`: the experiment's config, model and task, the number of
optimizer steps taken, the run folder, and a way to log values next to the run's
own metrics. That is all a plugin can rely on; the trainer's internals are not
part of the contract. The built-in gradient-flow probes use nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from omegaconf import DictConfig
    from torch import nn

    from rnnzoo.task import Task


class TrainingRun(Protocol):
    """A training run as event hooks see it.

    ``step`` is the number of optimizer steps taken so far; ``device`` is where the
    model and batches live; ``rank`` is the process's rank under ``torchrun`` (0 in
    a single process: rank 0 alone writes files, logs and probes); ``stopping`` says
    training ends after this step; ``config`` is read-only (the trainer reads its
    settings once, when training starts). :meth:`log`
    writes scalars to ``metrics.jsonl`` and W&B at the current step, or at an
    earlier ``step`` for values computed aside that arrive late (the gradient-flow
    probes' process does so);
    :meth:`log_images` shows PNG files already in the run folder as W&B images;
    :meth:`log_table` logs rows as a W&B table, so runs compare as data (W&B
    only: keep your own file of the numbers too).
    """

    @property
    def config(self) -> DictConfig: ...

    @property
    def model(self) -> nn.Module: ...

    @property
    def task(self) -> Task: ...

    @property
    def step(self) -> int: ...

    @property
    def run_dir(self) -> Path: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def rank(self) -> int: ...

    @property
    def stopping(self) -> bool:
        """Whether training stops after the current step before reaching
        ``trainer.steps`` (a signal, a time or token budget, non-finite values): a
        plugin with work in flight finishes it now. Early stopping is decided by
        the evaluation that follows the step's hooks."""
        ...

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None) -> None: ...

    def log_images(self, images: Mapping[str, Path]) -> None: ...

    def log_table(
        self,
        key: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        line: tuple[str, str, str] | None = None,
        share: float | None = None,
        step: int | None = None,
    ) -> None:
        """``rows`` (one value per column each) as a W&B table ``key`` at the current
        step (or ``step``, as for :meth:`log`); ``line=(x, y, series)`` adds a line chart ``{key}_plot`` of column
        ``y`` against column ``x``, one line per value of column ``series``. A row
        of the wrong length raises ``ValueError``.

        ``share`` (e.g. 0.01) keeps the time W&B spends on the key's tables within
        that share of the run's time, for tables logged often: rows that would
        exceed it go out with the key's next table, or when the run ends, so a
        table may hold the rows of several calls (give the rows a step column);
        the chart shows the newest call's rows. None sends every call at once."""


def busy_every(config: DictConfig) -> tuple[int, ...]:
    """The step intervals of ``config`` after which the trainer does more than a
    step: it evaluates (``trainer.eval_every``), saves a checkpoint
    (``checkpoint_every``), logs (``log_every``) and, when they are on, the
    gradient-flow probes probe (``gradflow.every``)."""
    t, every = config.trainer, int(config.gradflow.every)
    busy = (int(t.eval_every), int(t.checkpoint_every), int(t.log_every))
    return busy + (every,) if every > 0 else busy
