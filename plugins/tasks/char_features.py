"""Word input adapter: a word embedding, optionally joined by character-CNN features."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnzoo import Batch

#: size of each character's embedding before the convolution
CHAR_EMBEDDING_DIM = 32


class WordCharEncoder(nn.Module):
    """Each token becomes ``[word embedding ; char-CNN features]``, then dropout.

    The character part (Ma & Hovy 2016) embeds the characters of the word
    (``batch.extras["chars"]``, ``[B, T, W]`` ids, 0 = padding), runs a width-3
    convolution with ``char_dim`` filters over them and max-pools over the word. It
    sees spelling (suffixes, capitals, digits), so it can tag words the word
    vocabulary does not know. ``char_vocab_size == 0`` leaves it out.
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int,
        char_vocab_size: int = 0,
        char_dim: int = 50,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.words = nn.Embedding(vocab_size, word_dim)
        self.chars: nn.Embedding | None = None
        if char_vocab_size > 0:
            self.chars = nn.Embedding(char_vocab_size, CHAR_EMBEDDING_DIM, padding_idx=0)
            self.conv = nn.Conv1d(CHAR_EMBEDDING_DIM, char_dim, kernel_size=3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.output_size = word_dim + (char_dim if char_vocab_size > 0 else 0)

    def char_features(self, chars: Tensor) -> Tensor:
        """``[B, T, W]`` character ids to ``[B, T, char_dim]``; zero for padding tokens."""
        assert self.chars is not None
        B, T, W = chars.shape
        flat = chars.reshape(B * T, W)
        real = flat != 0
        x = self.conv(self.chars(flat).transpose(1, 2)).tanh()  # [B*T, F, W]
        x = x.masked_fill(~real[:, None, :], float("-inf")).amax(-1)
        x = torch.where(real.any(-1, keepdim=True), x, torch.zeros_like(x))
        return x.view(B, T, -1)

    def forward(self, batch: Batch) -> Tensor:
        x = self.words(batch.inputs)
        if self.chars is not None:
            x = torch.cat([x, self.char_features(batch.extras["chars"])], -1)
        return self.dropout(x)
