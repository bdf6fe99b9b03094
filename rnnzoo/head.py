"""The head contract: recurrent outputs in, predictions and a loss out."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo.task import Batch, TaskSpec


class Head(nn.Module):
    """Turns the recurrence's outputs ``[B, T, directions * hidden]`` into predictions.

    ``directions`` says how many directions of the recurrence the head needs: a
    head with ``directions = 2`` makes the model bidirectional. ``per_token`` says
    which kind of target it predicts; the model builder checks it against the task.

    :meth:`loss` returns the *sum* of the losses and the number of items they were
    summed over, so truncated-BPTT windows and gradient accumulation add up to the
    loss of the whole batch.
    """

    directions: ClassVar[int] = 1
    per_token: ClassVar[bool] = True

    def __init__(self, input_size: int, spec: TaskSpec, directions: int = 1) -> None:
        super().__init__()
        self.input_size = input_size
        self.spec = spec
        #: directions of the recurrence actually built (a head with
        #: ``directions = 1`` may still be put on a bidirectional recurrence)
        self.recurrence_directions = directions

    def forward(self, outputs: Tensor, batch: Batch) -> Tensor:
        raise NotImplementedError

    def loss(self, predictions: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


def summed_loss(
    predictions: Tensor, targets: Tensor, keep: Tensor | None, spec: TaskSpec
) -> tuple[Tensor, Tensor]:
    """Sum of cross-entropy or squared error over the items where ``keep`` is true,
    and the number of items summed.

    ``predictions`` is ``[..., output_size]``, ``targets`` and ``keep`` are ``[...]``
    (a trailing value dimension on real targets is allowed). ``keep=None``: every
    item counts, and the sum is one fused reduction without a mask.
    """
    predictions = predictions.float()
    classes = spec.output_kind == "classes"
    if classes:
        flat, labels = predictions.reshape(-1, spec.output_size), targets.reshape(-1).long()
    else:
        target = targets.float().reshape(predictions.shape)
    if keep is None:
        items = predictions.numel() // spec.output_size
        count = predictions.new_full((), float(items), dtype=torch.float32)  # no host copy
        if classes:
            return F.cross_entropy(flat, labels, reduction="sum"), count
        squared = F.mse_loss(predictions, target, reduction="sum")
        return (squared if spec.output_size == 1 else squared / spec.output_size), count
    if classes:
        per_item = F.cross_entropy(flat, labels, reduction="none").view(keep.shape)
    else:
        per_item = (predictions - target).pow(2).sum(-1).view(keep.shape) / spec.output_size
    keep_f = keep.to(per_item.dtype)
    return (per_item * keep_f).sum(), keep_f.sum()


def last_step(outputs: Tensor, batch: Batch) -> Tensor:
    """The output at each sequence's last real step: ``[B, F]``."""
    if batch.lengths is None:
        return outputs[:, -1]
    index = (batch.lengths - 1).clamp(min=0)
    return outputs[torch.arange(outputs.shape[0], device=outputs.device), index]
