"""Classic long-range problems, generated on the fly from a seed."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from rnnzoo import Batch, Task, TaskSpec, hookimpl
from rnnzoo.errors import ConfigError

#: training generators are seeded below this; the validation set above it
TRAIN_SEEDS = 1 << 62
VALIDATION_SEED = TRAIN_SEEDS + 1


class SyntheticTask(Task):
    """Shared machinery: training batch ``i`` is drawn from a generator seeded by
    ``(seed, i)``, so it is the same however often and in whatever order it is
    asked for. The validation set is ``val_size`` examples drawn once from a
    seed of its own: the same for every training seed and every batch size, so
    runs are compared on the same data."""

    def __init__(self, seed: int, val_size: int) -> None:
        if val_size < 1:
            raise ConfigError(f"'task.val_size' must be at least 1, got {val_size}.")
        self.seed = seed
        self.val_size = val_size
        self._validation: Batch | None = None

    def generate(self, batch_size: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError

    def train_batch(self, index: int, batch_size: int) -> Batch:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % TRAIN_SEEDS)
        return self.generate(batch_size, generator)

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        if self._validation is None:
            generator = torch.Generator().manual_seed(VALIDATION_SEED)
            self._validation = self.generate(self.val_size, generator)
        data = self._validation
        for start in range(0, self.val_size, batch_size):
            stop = start + batch_size
            yield Batch(inputs=data.inputs[start:stop], targets=data.targets[start:stop])


def _check_length(length: int, minimum: int) -> None:
    if length < minimum:
        raise ConfigError(f"'task.length' must be at least {minimum}, got {length}.")


class AddingTask(SyntheticTask):
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015 variant).

    Each step carries two channels: a value drawn from U[0, 1] and a marker. Exactly
    two steps are marked, one in each half of the sequence; the target is the sum
    of their values. Predicting 1 always gives MSE 1/6 ≈ 0.167: a model has learnt
    something only below that.
    """

    main_metric = "mse"

    def __init__(self, seed: int = 0, length: int = 50, val_size: int = 1000) -> None:
        super().__init__(seed, val_size)
        _check_length(length, 2)
        self.length = length
        self.spec = TaskSpec("real", 2, "real", 1, per_token=False)

    def generate(self, batch_size: int, generator: torch.Generator) -> Batch:
        values = torch.rand(batch_size, self.length, generator=generator)
        half = self.length // 2
        first = torch.randint(0, half, (batch_size,), generator=generator)
        second = torch.randint(half, self.length, (batch_size,), generator=generator)
        markers = torch.zeros(batch_size, self.length)
        rows = torch.arange(batch_size)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = values[rows, first] + values[rows, second]
        return Batch(inputs=torch.stack([values, markers], -1), targets=target)

    def metrics(self, predictions: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        error = (predictions.float().view(-1) - batch.targets.float()).pow(2)
        return {"mse": (float(error.sum()), error.numel())}

    def baseline(self) -> dict[str, float]:
        return {"mse": 1 / 6}


class CopyMemoryTask(SyntheticTask):
    """The copy-memory problem (Arjovsky, Shah & Bengio 2016).

    Ten symbols drawn from 8, then ``length`` blanks of which the last is replaced
    by a delimiter, then ten blanks during which the ten symbols must be repeated.
    Outputting blanks and then guessing uniformly gives cross-entropy
    10 ln 8 / (length + 20): the memoryless baseline.
    """

    main_metric = "loss"
    symbols = 8
    to_copy = 10

    def __init__(self, seed: int = 0, length: int = 100, val_size: int = 1000) -> None:
        super().__init__(seed, val_size)
        _check_length(length, 1)
        self.length = length
        # ids: 0 blank, 1..8 symbols, 9 delimiter
        self.spec = TaskSpec(
            "tokens", self.symbols + 2, "classes", self.symbols + 1, per_token=True
        )

    def generate(self, batch_size: int, generator: torch.Generator) -> Batch:
        n, total = self.to_copy, self.length + 2 * self.to_copy
        data = torch.randint(1, self.symbols + 1, (batch_size, n), generator=generator)
        inputs = torch.zeros(batch_size, total, dtype=torch.long)
        inputs[:, :n] = data
        inputs[:, self.length + n - 1] = self.symbols + 1
        targets = torch.zeros(batch_size, total, dtype=torch.long)
        targets[:, -n:] = data
        return Batch(inputs=inputs, targets=targets)

    def metrics(self, predictions: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        n = self.to_copy
        correct = predictions[:, -n:].argmax(-1) == batch.targets[:, -n:]
        return {"acc": (float(correct.sum()), correct.numel())}

    def baseline(self) -> dict[str, float]:
        return {
            "loss": self.to_copy * math.log(self.symbols) / (self.length + 2 * self.to_copy),
            "acc": 1 / self.symbols,
        }


class TemporalOrderTask(SyntheticTask):
    """The temporal-order problem (Hochreiter & Schmidhuber 1997; Pascanu et al. 2013).

    A sequence of distractor symbols holds two relevant symbols, each X or Y, one
    placed in 10-20 % of the sequence and one in 50-60 %. The class is their order
    (XX, XY, YX or YY): chance is 25 % accuracy, cross-entropy ln 4.
    """

    main_metric = "acc"
    main_metric_mode = "max"
    distractors = 4

    def __init__(self, seed: int = 0, length: int = 100, val_size: int = 1000) -> None:
        super().__init__(seed, val_size)
        _check_length(length, 10)
        self.length = length
        # ids: 0..3 distractors, 4 X, 5 Y
        self.spec = TaskSpec("tokens", self.distractors + 2, "classes", 4, per_token=False)

    def generate(self, batch_size: int, generator: torch.Generator) -> Batch:
        T = self.length
        inputs = torch.randint(0, self.distractors, (batch_size, T), generator=generator)

        def position(low: float, high: float) -> Tensor:
            start = int(low * T)
            return torch.randint(
                start, max(int(high * T), start + 1), (batch_size,), generator=generator
            )

        first, second = position(0.1, 0.2), position(0.5, 0.6)
        which = torch.randint(0, 2, (batch_size, 2), generator=generator)
        rows = torch.arange(batch_size)
        inputs[rows, first] = self.distractors + which[:, 0]
        inputs[rows, second] = self.distractors + which[:, 1]
        return Batch(inputs=inputs, targets=which[:, 0] * 2 + which[:, 1])

    def metrics(self, predictions: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        correct = predictions.argmax(-1) == batch.targets
        return {"acc": (float(correct.sum()), correct.numel())}

    def baseline(self) -> dict[str, float]:
        return {"loss": math.log(4), "acc": 0.25}


@hookimpl
def rnnzoo_tasks() -> dict[str, Any]:
    return {
        "adding": AddingTask,
        "copy_memory": CopyMemoryTask,
        "temporal_order": TemporalOrderTask,
    }
