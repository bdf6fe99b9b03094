"""An example third-party plugin: a minimal gated cell, installed via an entry point."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnzoo import Cell, State, hookimpl


class MinimalGatedCell(Cell):
    """Minimal gated unit (Zhou et al. 2016): one forget gate f decides how much of
    the old state to keep; h' = (1 - f) * h + f * tanh(W x + U (f * h)).
    """

    def __init__(self, input_size: int, hidden_size: int, gate_bias: float = 0.0) -> None:
        super().__init__(input_size, hidden_size)
        self.gate_x = nn.Linear(input_size, hidden_size)
        self.gate_h = nn.Linear(hidden_size, hidden_size, bias=False)
        self.cand_x = nn.Linear(input_size, hidden_size)
        self.cand_h = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.constant_(self.gate_x.bias, gate_bias)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        f = torch.sigmoid(self.gate_x(x_t) + self.gate_h(h))
        candidate = torch.tanh(self.cand_x(x_t) + self.cand_h(f * h))
        h = (1 - f) * h + f * candidate
        return h, (h,)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"cand_h": self.cand_h.weight, "gate_h": self.gate_h.weight}


@hookimpl
def rnnzoo_cells() -> dict[str, type[Cell]]:
    return {"mgu": MinimalGatedCell}
