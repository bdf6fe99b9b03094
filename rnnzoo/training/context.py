"""The :class:`rnnzoo.events.TrainingRun` a trainer hands to event hooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig
from torch import nn

from rnnzoo.task import Task

if TYPE_CHECKING:
    from rnnzoo.training.loop import Trainer


class RunView:
    """A narrow view of a running :class:`~rnnzoo.training.loop.Trainer`: what the
    event contract names, and nothing else."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    @property
    def config(self) -> DictConfig:
        return self._trainer.cfg

    @property
    def model(self) -> nn.Module:
        return self._trainer.model

    @property
    def task(self) -> Task:
        return self._trainer.task

    @property
    def step(self) -> int:
        return self._trainer.state.step

    @property
    def run_dir(self) -> Path:
        return self._trainer.folder.path

    @property
    def device(self) -> torch.device:
        return self._trainer.device

    @property
    def rank(self) -> int:
        return self._trainer.ranks.rank

    @property
    def stopping(self) -> bool:
        return self._trainer.stop.now or self._trainer.state.stopped is not None

    def log(self, metrics: Mapping[str, Any], *, step: int | None = None) -> None:
        if self._trainer.tracker is not None:
            self._trainer.tracker.log(self.step if step is None else step, dict(metrics))

    def log_images(self, images: Mapping[str, Path]) -> None:
        if self._trainer.tracker is not None:
            self._trainer.tracker.log_images(self.step, dict(images))

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
        if self._trainer.tracker is not None:
            at = self.step if step is None else step
            self._trainer.tracker.log_table(at, key, columns, rows, line, share)
