"""Update-gate RNN, UGRNN (Collins, Sohl-Dickstein & Sussillo 2017)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State, hookimpl


class UGRNNCell(Cell):
    """UGRNN: an Elman candidate and one update gate that mixes it with the old
    state (Collins, Sohl-Dickstein & Sussillo 2017, "Capacity and Trainability in
    Recurrent Neural Networks", ICLR)::

        c  = g(W_cx x + W_ch h + b_c)
        u  = sigmoid(W_gx x + W_gh h + b_g)
        h' = u * h + (1 - u) * c

    A GRU without the reset gate: the paper found it the most trainable of the
    cells it compared at small depth. ``g`` is the activation plugin (tanh in the
    paper); ``gate_bias`` sets b_g at the start (positive: keep more of h).
    """

    def __init__(
        self, input_size: int, hidden_size: int, activation: Activation, gate_bias: float = 1.0
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        bound = 1 / math.sqrt(hidden_size)
        # blocks in the order (c, g)
        self.weight_ih = nn.Parameter(
            torch.empty(2 * hidden_size, input_size).uniform_(-bound, bound)
        )
        self.weight_hh = nn.Parameter(
            torch.empty(2 * hidden_size, hidden_size).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(torch.zeros(2 * hidden_size))
        with torch.no_grad():
            self.bias[hidden_size:].fill_(gate_bias)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        z_c, z_g = (x_t + F.linear(h, self.weight_hh)).chunk(2, dim=1)
        c = self.activation(z_c)
        u = torch.sigmoid(z_g)
        h = u * h + (1 - u) * c
        return h, (h,)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"weight_hh": self.weight_hh}


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"ugrnn": UGRNNCell}
