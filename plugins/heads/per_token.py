"""Transducer heads: one prediction per token."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from rnnzoo import Batch, Head, TaskSpec, hookimpl
from rnnzoo.head import summed_loss
from rnnzoo_plugins.heads.sequence import mlp


class PerTokenHead(Head):
    """Transducer (e.g. part-of-speech tagging): a label for every real token from
    the recurrence's output at that step; losses are summed over real tokens only.
    ``hidden`` > 0 puts an MLP with that many units in front of the output layer.
    """

    per_token = True

    def __init__(
        self,
        input_size: int,
        spec: TaskSpec,
        directions: int = 1,
        hidden: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_size, spec, directions)
        self.dropout = nn.Dropout(dropout)
        self.project = mlp(input_size, hidden, spec.output_size)

    def forward(self, outputs: Tensor, batch: Batch) -> Tensor:
        return self.project(self.dropout(outputs))

    def loss(self, predictions: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        keep = None if batch.lengths is None else batch.mask()  # None: no padding
        return summed_loss(predictions, batch.targets, keep, self.spec)


class BidirectionalHead(PerTokenHead):
    """BiRNN tagger: each token's label from the forward state (everything up to
    it) and the backward state (everything after it) together. Choosing this head
    makes the recurrence bidirectional."""

    directions = 2


@hookimpl
def rnnzoo_heads() -> dict[str, Any]:
    return {"per_token": PerTokenHead, "bidirectional": BidirectionalHead}
