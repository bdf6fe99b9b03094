"""Independently recurrent neural network, IndRNN (Li, Li, Cook, Zhu & Gao 2018)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State, hookimpl


class IndRNNCell(Cell):
    """IndRNN: each unit sees only its own past, through one recurrent weight u_j
    (Li, Li, Cook, Zhu & Gao 2018, "Independently Recurrent Neural Network
    (IndRNN): Building a Longer and Deeper RNN", CVPR)::

        h' = g(W x + u * h + b)          (* elementwise: a diagonal recurrence)

    ``g`` is the activation plugin (ReLU in the paper: ``model.activation=relu``).
    Since dh'_j/dh_j = g'(z_j) u_j, the gradient over T steps scales as u_j^T: the
    paper keeps |u_j| <= ``recurrent_max`` (for ReLU and memory of T steps,
    2^(1/T) keeps the gradient from exploding). The bound is applied in the step
    (the effective u is clipped) and to the parameter after every optimizer step of
    ``rnnzoo train`` (this plugin's ``rnnzoo_step_end`` hook), so it holds at any
    time; null switches the constraint off. u starts uniform in
    [-``recurrent_init``, ``recurrent_init``], clipped to the bound.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        activation: Activation,
        recurrent_max: float | None = 1.0,
        recurrent_init: float = 1.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        if recurrent_max is not None and recurrent_max <= 0:
            raise ValueError(f"recurrent_max must be positive or null, got {recurrent_max}")
        self.activation = activation
        self.recurrent_max = recurrent_max
        bound = 1 / math.sqrt(input_size)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.u = nn.Parameter(torch.empty(hidden_size).uniform_(-recurrent_init, recurrent_init))
        self.clip_()

    def recurrent(self) -> Tensor:
        """u, clipped to [-recurrent_max, recurrent_max]."""
        if self.recurrent_max is None:
            return self.u
        return self.u.clamp(-self.recurrent_max, self.recurrent_max)

    @torch.no_grad()
    def clip_(self) -> None:
        """Clip the parameter u itself to the bound (after an optimizer step)."""
        if self.recurrent_max is not None:
            self.u.clamp_(-self.recurrent_max, self.recurrent_max)

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        h = self.activation(x_t + self.recurrent() * h)
        return h, (h,)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"u": torch.diag(self.recurrent())}


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"indrnn": IndRNNCell}


@hookimpl
def rnnzoo_step_end(run: Any) -> None:
    for module in run.model.modules():
        if isinstance(module, IndRNNCell):
            module.clip_()
