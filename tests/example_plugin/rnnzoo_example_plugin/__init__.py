"""An example third-party plugin: a small gated cell, installed via an entry point.

Its name, ``example_leaky``, is one no paper uses, so that it never collides with a
published cell that rnnzoo or another package registers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State, hookimpl


class ExampleLeakyCell(Cell):
    """Leaky gated cell (an example, not a published cell): one gate f decides how
    much of the old state to keep and how much of it the candidate sees::

        f  = sigmoid(W_f x + U_f h + b_f)
        c  = g(W_c x + U_c (f * h) + b_c)
        h' = (1 - f) * h + f * c

    ``g`` is the activation plugin (``model.activation``); ``gate_bias`` sets b_f at
    the start (negative: keep more of the old state).
    """

    def __init__(
        self, input_size: int, hidden_size: int, activation: Activation, gate_bias: float = 0.0
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        self.gate_x = nn.Linear(input_size, hidden_size)
        self.gate_h = nn.Linear(hidden_size, hidden_size, bias=False)
        self.cand_x = nn.Linear(input_size, hidden_size)
        self.cand_h = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.constant_(self.gate_x.bias, gate_bias)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        f = torch.sigmoid(self.gate_x(x_t) + self.gate_h(h))
        candidate = self.activation(self.cand_x(x_t) + self.cand_h(f * h))
        h = (1 - f) * h + f * candidate
        return h, (h,)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"cand_h": self.cand_h.weight, "gate_h": self.gate_h.weight}


@hookimpl
def rnnzoo_cells() -> dict[str, type[Cell]]:
    return {"example_leaky": ExampleLeakyCell}
