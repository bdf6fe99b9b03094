"""Encoder head: one prediction per sequence."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rnnzoo import Batch, Head, TaskSpec, hookimpl
from rnnzoo.head import last_step, summed_loss


def mlp(input_size: int, hidden: int, output_size: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(input_size, output_size)
    return nn.Sequential(nn.Linear(input_size, hidden), nn.Tanh(), nn.Linear(hidden, output_size))


class SequenceHead(Head):
    """Encoder (sequence -> label): the state after each sequence's last real step
    goes through a linear layer (or an MLP with ``hidden`` units) to classes or a
    regression value. With a bidirectional recurrence the backward direction's
    state after reading the whole sequence (its output at step 0) is concatenated.
    """

    per_token = False

    def __init__(
        self, input_size: int, spec: TaskSpec, directions: int = 1, hidden: int = 0
    ) -> None:
        super().__init__(input_size, spec, directions)
        self.project = mlp(input_size, hidden, spec.output_size)

    def forward(self, outputs: Tensor, batch: Batch) -> Tensor:
        features = last_step(outputs, batch)
        if self.recurrence_directions == 2:
            half = outputs.shape[-1] // 2
            features = torch.cat([features[:, :half], outputs[:, 0, half:]], -1)
        return self.project(features)

    def loss(self, predictions: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        # a truncated-BPTT window scores only the sequences that end inside it
        return summed_loss(predictions, batch.targets, batch.ends, self.spec)


@hookimpl
def rnnzoo_heads() -> dict[str, Any]:
    return {"sequence": SequenceHead}
