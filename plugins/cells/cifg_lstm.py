"""Coupled input-forget gate LSTM, CIFG (Greff et al. 2017)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State, hookimpl


class CIFGLSTMCell(Cell):
    """LSTM whose forget gate is one minus its input gate: what enters the cell
    pushes out as much of what was there (Greff, Srivastava, Koutník, Steunebrink &
    Schmidhuber 2017, "LSTM: A Search Space Odyssey", IEEE TNNLS 28; the CIFG
    variant of their vanilla LSTM, which has peepholes)::

        i  = sigmoid(W_i x + U_i h + p_i * c + b_i)
        f  = 1 - i
        c' = f * c + i * g(W_c x + U_c h + b_c)
        o  = sigmoid(W_o x + U_o h + p_o * c' + b_o)
        h' = o * g(c')

    Three gate blocks instead of four: a quarter fewer weights than an LSTM, and
    Greff et al. found no significant loss on their tasks. ``g`` is the activation
    plugin; ``peepholes`` switches p_i, p_o on (as in the paper); ``forget_bias`` sets
    b_i to its negative at the start, so that f = 1 - i begins near sigmoid(forget_bias).
    """

    state_layout = ("h", "c")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        activation: Activation,
        peepholes: bool = True,
        forget_bias: float | None = 1.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        # gate blocks in the order (i, c, o)
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(3 * hidden_size))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        self.peephole = (
            nn.Parameter(torch.empty(2, hidden_size).uniform_(-bound, bound)) if peepholes else None
        )  # p_i, p_o
        if forget_bias is not None:
            with torch.no_grad():
                self.bias[:hidden_size].fill_(-forget_bias)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        z_i, z_c, z_o = (x_t + F.linear(h, self.weight_hh)).chunk(3, dim=1)
        p_i, p_o = (0.0, 0.0) if self.peephole is None else self.peephole
        i = torch.sigmoid(z_i + p_i * c)
        f = 1 - i
        c = f * c + i * self.activation(z_c)
        o = torch.sigmoid(z_o + p_o * c)
        h = o * self.activation(c)
        return h, (h, c)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"weight_hh": self.weight_hh}


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"cifg_lstm": CIFGLSTMCell}
