"""Input adapters: what the task yields, turned into vectors for the first cell."""

from __future__ import annotations

from torch import Tensor, nn

from rnnzoo.task import Batch, TaskSpec

DEFAULT_EMBEDDING_DIM = 64


class TokenEmbedding(nn.Module):
    """Token ids ``[B, T]`` to vectors ``[B, T, dim]``."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim)
        self.output_size = dim

    def forward(self, batch: Batch) -> Tensor:
        return self.embedding(batch.inputs)


class RealInput(nn.Module):
    """Real-valued features ``[B, T, F]``, fed as they are or through a linear layer."""

    def __init__(self, features: int, dim: int | None) -> None:
        super().__init__()
        self.project = nn.Linear(features, dim) if dim is not None else None
        self.output_size = dim if dim is not None else features

    def forward(self, batch: Batch) -> Tensor:
        features = batch.inputs.float()
        return features if self.project is None else self.project(features)


def input_adapter(spec: TaskSpec, input_dim: int | None) -> nn.Module:
    """The adapter for what ``spec`` says the task yields."""
    if spec.input_kind == "tokens":
        return TokenEmbedding(spec.input_size, input_dim or DEFAULT_EMBEDDING_DIM)
    return RealInput(spec.input_size, input_dim)
