"""Built-in activations, each with its derivative and the derivative's range."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnzoo import Activation, hookimpl


class Tanh(Activation):
    """tanh(z). g'(z) = 1 - tanh(z)^2 lies in (0, 1]: each step can only shrink
    the gradient, the heart of the vanishing-gradient argument."""

    derivative_range = (0.0, 1.0)

    def function(self, z: Tensor) -> Tensor:
        return torch.tanh(z)

    def derivative(self, z: Tensor) -> Tensor:
        return 1 - torch.tanh(z).pow(2)


class ReLU(Activation):
    """max(0, z). g'(z) is 0 or 1: no shrinking while a unit is active, no
    gradient at all once it is dead, and nothing that stops an explosion."""

    derivative_range = (0.0, 1.0)
    can_die = True

    def function(self, z: Tensor) -> Tensor:
        return torch.relu(z)

    def derivative(self, z: Tensor) -> Tensor:
        return (z > 0).to(z.dtype)


class Sigmoid(Activation):
    """1 / (1 + e^-z). g'(z) = s(1 - s) lies in (0, 1/4]."""

    derivative_range = (0.0, 0.25)

    def function(self, z: Tensor) -> Tensor:
        return torch.sigmoid(z)

    def derivative(self, z: Tensor) -> Tensor:
        s = torch.sigmoid(z)
        return s * (1 - s)


class Identity(Activation):
    """z. g'(z) = 1: a linear recurrence, whose gradient is governed by the
    recurrent matrix alone."""

    derivative_range = (1.0, 1.0)

    def function(self, z: Tensor) -> Tensor:
        return z

    def derivative(self, z: Tensor) -> Tensor:
        return torch.ones_like(z)


class LeakyReLU(Activation):
    """max(0, z) + negative_slope * min(0, z). g'(z) is negative_slope or 1."""

    can_die = True

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.derivative_range = (min(negative_slope, 1.0), max(negative_slope, 1.0))  # type: ignore[misc]

    def function(self, z: Tensor) -> Tensor:
        return F.leaky_relu(z, self.negative_slope)

    def derivative(self, z: Tensor) -> Tensor:
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, self.negative_slope))


class HardTanh(Activation):
    """z clipped to [min_val, max_val]. g'(z) is 1 inside and 0 outside: a
    saturated unit passes no gradient."""

    derivative_range = (0.0, 1.0)
    can_die = True

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0) -> None:
        super().__init__()
        self.min_val = min_val
        self.max_val = max_val

    def function(self, z: Tensor) -> Tensor:
        return F.hardtanh(z, self.min_val, self.max_val)

    def derivative(self, z: Tensor) -> Tensor:
        return ((z > self.min_val) & (z < self.max_val)).to(z.dtype)


@hookimpl
def rnnzoo_activations() -> dict[str, Any]:
    return {
        "tanh": Tanh,
        "relu": ReLU,
        "sigmoid": Sigmoid,
        "identity": Identity,
        "leaky_relu": LeakyReLU,
        "hardtanh": HardTanh,
    }
