"""The activation contract: a function, its derivative, and the derivative's range."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


class Activation(nn.Module):
    """An elementwise nonlinearity ``g`` used by a cell.

    Subclasses implement :meth:`function` and, where they know it in closed form,
    :meth:`derivative`. ``derivative_range`` is the closed interval that ``g'(z)``
    lives in; it is what makes the vanishing gradient argument work (for tanh the
    factor per step is at most 1), and the gradient-flow probes report it.

    While :attr:`recorded` is a list, every pre-activation the module sees is
    appended to it (detached): that is how probes measure ``g'(z)`` during a run.
    """

    derivative_range: ClassVar[tuple[float, float]] = (float("-inf"), float("inf"))
    #: derivative equal to zero means "dead unit" (ReLU-like activations set this)
    can_die: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[Tensor] | None = None

    def function(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def derivative(self, z: Tensor) -> Tensor:
        """``g'(z)`` elementwise; by default computed with autograd."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.function(z).sum(), z)
        return grad

    def forward(self, z: Tensor) -> Tensor:
        if self.recorded is not None:
            self.recorded.append(z.detach())
        return self.function(z)
