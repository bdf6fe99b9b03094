"""LSTM with peephole connections (Gers, Schraudolph & Schmidhuber 2002)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State, hookimpl


class PeepholeLSTMCell(Cell):
    """LSTM whose gates also see the cell state through diagonal "peephole" weights
    p_i, p_f, p_o (Gers, Schraudolph & Schmidhuber 2002, "Learning precise timing
    with LSTM recurrent networks", JMLR 3)::

        i  = sigmoid(W_i x + U_i h + p_i * c  + b_i)
        f  = sigmoid(W_f x + U_f h + p_f * c  + b_f)
        c' = f * c + i * g(W_c x + U_c h + b_c)
        o  = sigmoid(W_o x + U_o h + p_o * c' + b_o)
        h' = o * g(c')

    The output gate peeks at the new cell state c', the input and forget gates at
    the old one. ``g`` is the activation plugin (tanh in the paper); ``forget_bias``
    sets b_f at the start (null: PyTorch's uniform initialisation, like the rest).
    """

    state_layout = ("h", "c")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        activation: Activation,
        forget_bias: float | None = 1.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        # gate blocks in the order (i, f, c, o)
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.peephole = nn.Parameter(torch.empty(3, hidden_size))  # p_i, p_f, p_o
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        if forget_bias is not None:
            with torch.no_grad():
                self.bias[hidden_size : 2 * hidden_size].fill_(forget_bias)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        z_i, z_f, z_c, z_o = (x_t + F.linear(h, self.weight_hh)).chunk(4, dim=1)
        p_i, p_f, p_o = self.peephole
        i = torch.sigmoid(z_i + p_i * c)
        f = torch.sigmoid(z_f + p_f * c)
        c = f * c + i * self.activation(z_c)
        o = torch.sigmoid(z_o + p_o * c)
        h = o * self.activation(c)
        return h, (h, c)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"weight_hh": self.weight_hh}


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"peephole_lstm": PeepholeLSTMCell}
