"""Long short-term memory (Hochreiter & Schmidhuber 1997, with forget gate)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State, hookimpl
from rnnzoo_plugins.activations import Tanh
from rnnzoo_plugins.cells.fused import FusedKernel, fusable


class LSTMCell(Cell):
    """LSTM with forget gate, gates in torch.nn.LSTM's order (i, f, g, o)::

        i = sigmoid(W_ii x + W_hi h + b_i)      f = sigmoid(W_if x + W_hf h + b_f)
        g = act(W_ig x + W_hg h + b_g)          o = sigmoid(W_io x + W_ho h + b_o)
        c' = f * c + i * g                      h' = o * act(c')

    ``act`` is the activation plugin (tanh by default; only tanh uses the fused
    kernel). ``forget_bias`` sets the forget gate's bias at initialisation
    (1.0, Jozefowicz et al. 2015, helps long-range memory from the first step);
    null keeps PyTorch's uniform initialisation.
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
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)
        self.kernel = FusedKernel("lstm", input_size, hidden_size)
        if forget_bias is not None:
            with torch.no_grad():
                self.bias_ih[hidden_size : 2 * hidden_size].fill_(forget_bias)
                self.bias_hh[hidden_size : 2 * hidden_size].zero_()

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias_ih)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        gates = x_t + F.linear(h, self.weight_hh, self.bias_hh)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * self.activation(g)
        h = torch.sigmoid(o) * self.activation(c)
        return h, (h, c)

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
    return {"lstm": LSTMCell}
