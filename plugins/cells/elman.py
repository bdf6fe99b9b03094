"""The Elman RNN: s_t = g(s_{t-1} W_s + x_t W_x + b)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State, hookimpl
from rnnzoo_plugins.activations import ReLU, Tanh
from rnnzoo_plugins.cells.fused import FusedKernel, fusable

_KERNEL_OF = {Tanh: "rnn_tanh", ReLU: "rnn_relu"}


class ElmanCell(Cell):
    """Elman RNN: h_t = g(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), any activation g.

    Parameters are laid out as in torch.nn.RNN, so weights copy across; with tanh
    or relu it runs on PyTorch's fused kernel when no per-step states are needed.
    ``init_scale`` scales the default uniform(-1/sqrt(H), 1/sqrt(H)) initialisation.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        activation: Activation,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(hidden_size))
        bound = init_scale / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        kind = _KERNEL_OF.get(type(activation))
        self.kernel = None if kind is None else FusedKernel(kind, input_size, hidden_size)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        h = self.activation(x_t + F.linear(h, self.weight_hh, self.bias_hh))
        return h, (h,)

    def forward_sequence(
        self, x: Tensor, state: State, lengths: Tensor | None
    ) -> tuple[Tensor, State] | None:
        if self.kernel is None or not fusable(self.activation, *_KERNEL_OF):
            return None
        weights = [self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh]
        return self.kernel(x, state, weights, lengths)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"weight_hh": self.weight_hh}


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"elman": ElmanCell}
