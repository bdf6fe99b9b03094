"""The task contract: data, targets, metrics and the trivial baseline."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class TaskSpec:
    """What a task feeds the model and expects back.

    ``input_kind`` picks the input adapter: ``"tokens"`` (ids below ``input_size``,
    embedded) or ``"real"`` (``input_size`` features per step). ``output_kind`` and
    ``output_size`` pick the loss: ``"classes"`` (cross-entropy over ``output_size``
    classes) or ``"real"`` (mean squared error on ``output_size`` values).
    ``per_token`` says whether there is a target at every real step or one per
    sequence.
    """

    input_kind: Literal["tokens", "real"]
    input_size: int
    output_kind: Literal["classes", "real"]
    output_size: int
    per_token: bool
    #: a stream task's batches continue each other; the trainer carries the state
    stream: bool = False


@dataclass
class Batch:
    """A padded, batch-first batch.

    ``lengths`` holds the number of real steps of each sequence (``None``: all are
    full length). ``ends`` marks the sequences whose last step lies inside this
    batch; it is only ever false for a window cut out by truncated BPTT.
    ``extras`` carries task-specific tensors (for example character ids).
    ``reset`` (stream tasks) marks the lanes that start afresh here: the model
    replaces the state carried into them by the initial state.
    """

    inputs: Tensor
    targets: Tensor
    lengths: Tensor | None = None
    ends: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    reset: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def steps(self) -> int:
        return self.inputs.shape[1]

    def mask(self) -> Tensor:
        """``[B, T]`` booleans, true at real (not padded) steps."""
        positions = torch.arange(self.steps, device=self.inputs.device)
        if self.lengths is None:
            return torch.ones(
                self.batch_size, self.steps, dtype=torch.bool, device=self.inputs.device
            )
        return positions[None, :] < self.lengths[:, None]

    def num_tokens(self) -> int:
        return int(self.lengths.sum()) if self.lengths is not None else self.batch_size * self.steps

    def to(self, device: torch.device | str) -> Batch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            inputs=self.inputs.to(device, non_blocking=True),
            targets=self.targets.to(device, non_blocking=True),
            lengths=move(self.lengths),
            ends=move(self.ends),
            extras={k: v.to(device, non_blocking=True) for k, v in self.extras.items()},
            reset=move(self.reset),
        )

    def rows(self, start: int, stop: int) -> Batch:
        """Sequences ``[start, stop)`` of this batch (a data-parallel rank's share)."""

        def part(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[start:stop]

        return replace(
            self,
            inputs=self.inputs[start:stop],
            targets=self.targets[start:stop],
            lengths=part(self.lengths),
            ends=part(self.ends),
            extras={k: v[start:stop] for k, v in self.extras.items()},
            reset=part(self.reset),
        )

    def window(self, start: int, stop: int, per_token: bool) -> Batch:
        """Steps ``[start, stop)`` of this batch, for truncated BPTT."""
        full = (
            self.lengths
            if self.lengths is not None
            else torch.full((self.batch_size,), self.steps, device=self.inputs.device)
        )
        ends = (full > start) & (full <= stop)
        if self.ends is not None:
            ends = ends & self.ends
        return replace(
            self,
            inputs=self.inputs[:, start:stop],
            targets=self.targets[:, start:stop] if per_token else self.targets,
            lengths=(full - start).clamp(0, stop - start),
            ends=ends,
            extras={k: v[:, start:stop] for k, v in self.extras.items()},
            reset=self.reset if start == 0 else None,
        )


class Task:
    """A source of batches and the metrics that judge predictions.

    Training batches are a pure function of their index (``train_batch(i)``), so a
    resumed run sees exactly the data it would have seen, and parallel ranks can
    take disjoint indices. ``baseline()`` gives the metrics of the trivial predictor
    (for example "always predict 1" on the adding problem) so a run shows how far
    below it is.
    """

    spec: TaskSpec
    #: the metric that judges a run; early stopping and summaries use it
    main_metric: ClassVar[str] = "loss"
    main_metric_mode: ClassVar[Literal["min", "max"]] = "min"

    def train_batch(self, index: int, batch_size: int) -> Batch:
        raise NotImplementedError

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        raise NotImplementedError

    def metrics(self, predictions: Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
        """Metric sums and counts for one batch: ``{"acc": (correct, total)}``."""
        return {}

    def input_adapter(self, input_dim: int | None) -> nn.Module | None:
        """A task-specific input adapter (for example word plus character features);
        ``None`` uses the default one for :attr:`spec`."""
        return None

    def baseline(self) -> dict[str, float]:
        return {}

    def save(self, run_dir: Path) -> None:
        """Store what ``eval`` and ``sample`` need (vocabularies, label sets)."""

    def load(self, run_dir: Path) -> None:
        """Read back what :meth:`save` stored."""

    def decode(self, ids: list[int]) -> str:
        """Turn token ids back into text (language-model tasks)."""
        raise NotImplementedError(f"{type(self).__name__} has no text decoding")

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError(f"{type(self).__name__} has no text encoding")
