"""Layer-normalised LSTM (Ba, Kiros & Hinton 2016)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State, hookimpl


class LayerNormLSTMCell(Cell):
    """LSTM with layer normalisation of the recurrent and the input contributions
    and of the cell state (Ba, Kiros & Hinton 2016, "Layer Normalization",
    arXiv:1607.06450, equations 20–22)::

        (f, i, o, u) = LN(W_h h; a_1, b_1) + LN(W_x x; a_2, b_2) + b
        c' = sigmoid(f) * c + sigmoid(i) * g(u)
        h' = sigmoid(o) * g(LN(c'; a_3, b_3))

    LN(z; a, b) = a * (z - mean(z)) / sqrt(var(z) + eps) + b over the units of one
    step of one sequence (the whole 4H gate vector for the first two): no batch
    statistics, so it behaves the same in training and evaluation and at every
    sequence length. ``g`` is the activation plugin; ``forget_bias`` sets the forget
    gate's part of b at the start.
    """

    state_layout = ("h", "c")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        activation: Activation,
        forget_bias: float = 1.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        self.eps = eps
        bound = 1 / math.sqrt(hidden_size)
        # gate blocks in the order (f, i, o, u)
        self.weight_ih = nn.Parameter(
            torch.empty(4 * hidden_size, input_size).uniform_(-bound, bound)
        )
        self.weight_hh = nn.Parameter(
            torch.empty(4 * hidden_size, hidden_size).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        self.ln_h = nn.LayerNorm(4 * hidden_size, eps=eps)  # a_1, b_1
        self.ln_x = nn.LayerNorm(4 * hidden_size, eps=eps)  # a_2, b_2
        self.ln_c = nn.LayerNorm(hidden_size, eps=eps)  # a_3, b_3
        with torch.no_grad():
            self.bias[:hidden_size].fill_(forget_bias)

    def project_input(self, x: Tensor) -> Tensor:
        """LN(W_x x) + b: normalises each step's input on its own, so time-local."""
        return self.ln_x(F.linear(x, self.weight_ih)) + self.bias

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        f, i, o, u = (self.ln_h(F.linear(h, self.weight_hh)) + x_t).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * self.activation(u)
        h = torch.sigmoid(o) * self.activation(self.ln_c(c))
        return h, (h, c)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"weight_hh": self.weight_hh}


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"ln_lstm": LayerNormLSTMCell}
