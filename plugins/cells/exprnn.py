"""Orthogonal RNN through the exponential map, expRNN (Lezcano-Casado & Martínez-Rubio 2019)."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize

from rnnzoo import Activation, Cell, State, hookimpl
from rnnzoo.recurrence import step_loop


class ExpRNNCell(Cell):
    """Elman RNN whose recurrent matrix is orthogonal at every step of training
    (Lezcano-Casado & Martínez-Rubio 2019, "Cheap Orthogonal Constraints in Neural
    Networks: A Simple Parametrization of the Orthogonal and Unitary Group", ICML)::

        B  = expm(A),  A = -A^T           (B^T B = I: all singular values 1)
        h' = g(W x + B h + b)

    The optimizer updates the unconstrained A; ``torch.nn.utils.parametrizations
    .orthogonal`` computes B from it (``orthogonal_map``: ``matrix_exp`` as in the
    paper, or ``cayley``/``householder``), so B never leaves the orthogonal group and
    sigma_max is 1: the recurrent matrix neither shrinks nor grows the gradient;
    only g'(z) can. ``g`` is the activation plugin (modReLU in the paper; relu or
    tanh here). B starts as a random orthogonal matrix. Whole sequences compute B
    once (``forward_sequence``); the per-step path of the gradient-flow probes
    computes it at every step.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        activation: Activation,
        orthogonal_map: Literal["matrix_exp", "cayley", "householder"] = "matrix_exp",
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        bound = 1 / math.sqrt(input_size)
        self.input = nn.Linear(input_size, hidden_size)
        nn.init.uniform_(self.input.weight, -bound, bound)
        nn.init.zeros_(self.input.bias)
        self.recurrent = nn.Linear(hidden_size, hidden_size, bias=False)
        nn.init.orthogonal_(self.recurrent.weight)
        parametrizations.orthogonal(self.recurrent, "weight", orthogonal_map=orthogonal_map)

    def project_input(self, x: Tensor) -> Tensor:
        return self.input(x)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        h = self.activation(x_t + F.linear(h, self.recurrent.weight))
        return h, (h,)

    def forward_sequence(
        self, x: Tensor, state: State, lengths: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """The step loop, with B computed once for the sequence instead of once per
        step (``parametrize.cached``): the same numbers, an order of magnitude faster
        at T = 100."""
        with parametrize.cached():
            outputs, final, _ = step_loop(self, x, state, lengths, False)
        return outputs, final

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"B": self.recurrent.weight}


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"exprnn": ExpRNNCell}
