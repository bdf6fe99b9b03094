"""The activation contract: a function, its derivative, and the derivative's range."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn


class Activation(nn.Module):
    """An elementwise nonlinearity ``g`` used by a cell.

    Subclasses implement :meth:`function` and, where they know it in closed form,
    :meth:`derivative`. ``derivative_range`` is the closed interval that ``g'(z)``
    lives in; it is what makes the vanishing gradient argument work (for tanh the
    factor per step is at most 1). The gradient-flow probes log its bound on
    ``|g'(z)|`` (``gradflow/act_deriv_bound``) and whether that bound exceeds 1
    (``gradflow/act_can_amplify``); :meth:`amplification_note` says the same in
    words. An activation that declares no range (the default, unbounded) gets
    neither scalar: nothing is known.

    While :attr:`recorded` is a list, every pre-activation the module sees is
    appended to it (detached): that is how probes measure ``g'(z)`` during a run.
    """

    derivative_range: ClassVar[tuple[float, float]] = (float("-inf"), float("inf"))
    #: derivative equal to zero means "dead unit" (ReLU-like activations set this)
    can_die: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[Tensor] | None = None

    @property
    def derivative_bound(self) -> float:
        """The largest ``|g'(z)|`` that ``derivative_range`` allows (inf when the
        activation declares no range)."""
        low, high = self.derivative_range
        return max(abs(low), abs(high))

    def amplification_note(self) -> str:
        """One line on what ``g'(z)`` can do to the gradient flowing back through
        a step, from ``derivative_range``."""
        low, high = self.derivative_range
        bound = self.derivative_bound
        if not math.isfinite(bound):
            return (
                "g'(z) has no declared range: whether the activation can amplify "
                "the gradient is unknown (declare derivative_range)"
            )
        where = f"g'(z) lies in [{low:g}, {high:g}]"
        if bound > 1:
            return (
                f"{where}: it can exceed 1, so the activation can amplify the gradient, "
                "which can grow (explode) through time"
            )
        if bound < 1:
            return (
                f"{where}: the activation shrinks the gradient at every step; only the "
                "recurrent weights can make it grow through time"
            )
        return (
            f"{where}: the activation never amplifies the gradient; only the recurrent "
            "weights can make it grow through time"
        )

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
