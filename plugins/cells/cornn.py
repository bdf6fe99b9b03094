"""Coupled oscillatory RNN, coRNN (Rusch & Mishra 2021)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State, hookimpl


class CoRNNCell(Cell):
    """coRNN: a network of damped, driven, coupled oscillators, each unit's position
    y obeying d²y/dt² = g(W y + W_z dy/dt + V x + b) - gamma y - epsilon dy/dt,
    discretised in time with velocity z (Rusch & Mishra 2021, "Coupled Oscillatory
    Recurrent Neural Network (coRNN): An Accurate and (Gradient) Stable
    Architecture for Learning Long Time Dependencies", ICLR)::

        z' = z + dt * (g(W y + W_z z + V x + b) - gamma * y - epsilon * z)
        y' = y + dt * z'

    (the damping term explicit, as in the authors' code). The state is (y, z):
    position and velocity of each oscillator; the output is y'. The paper bounds
    the hidden states and the gradient, which neither explodes nor, for small dt,
    vanishes. ``g`` is the activation plugin (tanh in the paper); ``dt``, ``gamma``
    and ``epsilon`` default to the values of the authors' MNIST scripts.
    """

    state_layout = ("y", "z")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        activation: Activation,
        dt: float = 0.042,
        gamma: float = 2.7,
        epsilon: float = 4.7,
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        self.dt, self.gamma, self.epsilon = dt, gamma, epsilon
        bound_x, bound_h = 1 / math.sqrt(input_size), 1 / math.sqrt(hidden_size)
        self.weight_ih = nn.Parameter(
            torch.empty(hidden_size, input_size).uniform_(-bound_x, bound_x)
        )
        self.bias = nn.Parameter(torch.empty(hidden_size).uniform_(-bound_x, bound_x))
        self.w_y = nn.Parameter(torch.empty(hidden_size, hidden_size).uniform_(-bound_h, bound_h))
        self.w_z = nn.Parameter(torch.empty(hidden_size, hidden_size).uniform_(-bound_h, bound_h))

    def project_input(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        y, z = state
        drive = self.activation(F.linear(y, self.w_y) + F.linear(z, self.w_z) + x_t)
        z = z + self.dt * (drive - self.gamma * y - self.epsilon * z)
        y = y + self.dt * z
        return y, (y, z)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"w_y": self.w_y, "w_z": self.w_z}


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"cornn": CoRNNCell}
