"""The gradient-controller contract: shape the gradient before, during and after backward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

#: the statistic a clipping controller reports as 1.0 when it changed the gradient;
#: the trainer averages it into ``clip/rate``
CLIPPED = "clipped"


@dataclass(frozen=True)
class Window:
    """One truncated-BPTT window.

    The losses of steps ``[loss_start, stop)`` are backpropagated through steps
    ``[start, stop)``; the state entering ``start`` is detached.
    """

    start: int
    loss_start: int
    stop: int


class GradController:
    """Something that shapes the gradient, at three fixed points of a training step.

    * before backward, :meth:`plan_windows` may cut the time axis into truncated-BPTT
      windows (at most one controller of a run may do so);
    * during backward, :meth:`watch_states` may register hooks on the per-step
      hidden states ``h_t`` (only called when ``needs_step_states`` is true);
    * after backward, :meth:`after_backward` may rescale the parameters' gradients
      and returns statistics to log (for a clipping controller at least
      ``norm_preclip`` and :data:`CLIPPED`, 1.0 when it changed the gradient).

    Controllers compose in the order the config lists them.
    """

    needs_step_states: ClassVar[bool] = False

    def plan_windows(self, steps: int) -> list[Window] | None:
        return None

    def watch_states(self, states: Sequence[Tensor]) -> None:
        """Called once per forward pass with the per-step states of every layer."""

    def after_backward(self, model: nn.Module) -> dict[str, float]:
        return {}


def plans_windows(controller: GradController) -> bool:
    """Whether ``controller`` overrides :meth:`GradController.plan_windows`."""
    return type(controller).plan_windows is not GradController.plan_windows


def global_norm(grads: Sequence[Tensor]) -> float:
    """The L2 norm of all ``grads`` taken together."""
    if not grads:
        return 0.0
    return float(
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    )
