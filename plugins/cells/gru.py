"""Gated recurrent unit (Cho et al. 2014), in torch.nn.GRU's formulation."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State, hookimpl
from rnnzoo_plugins.activations import Tanh
from rnnzoo_plugins.cells.fused import FusedKernel, fusable


class GRUCell(Cell):
    """GRU, gates in torch.nn.GRU's order (r, z, n)::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = act(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    ``act`` is the activation plugin (tanh by default; only tanh uses the fused
    kernel).
    """

    def __init__(self, input_size: int, hidden_size: int, activation: Activation) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        self.kernel = FusedKernel("gru", input_size, hidden_size)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        x_r, x_z, x_n = x_t.chunk(3, dim=1)
        h_r, h_z, h_n = F.linear(h, self.weight_hh, self.bias_hh).chunk(3, dim=1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = self.activation(x_n + r * h_n)
        h = (1 - z) * n + z * h
        return h, (h,)

    def forward_sequence(
        self, x: Tensor, state: State, lengths: Tensor | None
    ) -> tuple[Tensor, State] | None:
        if not fusable(self.activation, Tanh):
            return None
        weights = [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]
        return self.kernel(x, state, weights, lengths)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"weight_hh": self.weight_hh}


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"gru": GRUCell}
