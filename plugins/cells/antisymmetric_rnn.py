"""Antisymmetric RNN (Chang, Chen, Haber & Chi 2019)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State, hookimpl


class AntisymmetricRNNCell(Cell):
    """AntisymmetricRNN: a forward-Euler step of the ODE dh/dt = g((W - W^T) h + ...)
    whose Jacobian has purely imaginary eigenvalues, so it neither explodes nor
    forgets (Chang, Chen, Haber & Chi 2019, "AntisymmetricRNN: A Dynamical System
    View on Recurrent Neural Networks", ICLR)::

        h' = h + epsilon * g((W - W^T - gamma I) h + V x + b)

    W - W^T is antisymmetric: its eigenvalues lie on the imaginary axis; the
    diffusion gamma moves them to real part -gamma, which keeps the Euler step
    stable; ``epsilon`` is the step size. ``g`` is the activation plugin (tanh in
    the paper). W starts from N(0, ``init_std``^2 / hidden_size).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        activation: Activation,
        epsilon: float = 0.1,
        gamma: float = 0.01,
        init_std: float = 1.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        self.epsilon = epsilon
        self.gamma = gamma
        bound = 1 / math.sqrt(input_size)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.weight = nn.Parameter(
            torch.randn(hidden_size, hidden_size) * init_std / math.sqrt(hidden_size)
        )

    def recurrent(self) -> Tensor:
        """W - W^T - gamma I."""
        eye = torch.eye(self.hidden_size, dtype=self.weight.dtype, device=self.weight.device)
        return self.weight - self.weight.T - self.gamma * eye

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        h = h + self.epsilon * self.activation(F.linear(h, self.recurrent()) + x_t)
        return h, (h,)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"W - W^T - gamma I": self.recurrent()}


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"antisymmetric_rnn": AntisymmetricRNNCell}
