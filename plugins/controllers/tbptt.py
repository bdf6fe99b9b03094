"""Truncated backpropagation through time, TBPTT(k1, k2) of Williams & Peng (1990)."""

from __future__ import annotations

from typing import Any

from rnnzoo import GradController, Window, hookimpl
from rnnzoo.errors import ConfigError


class TBPTT(GradController):
    """Every ``k1`` steps, backpropagate the losses of those ``k1`` steps through
    the last ``k2`` steps (``k2`` >= ``k1``; default ``k2 = k1``).

    Window j holds the losses of steps ``[j k1, (j + 1) k1)`` and backpropagates
    them through those steps and the ``k2 - k1`` steps before them; the state
    entering the window is detached. So memory holds at most ``k2`` steps of graph
    however long the sequence, ``k1 = k2`` is plain chunk-and-detach, and with
    ``k2 > k1`` the overlap is recomputed from a detached state stored on the way.
    A last, shorter window keeps the same overlap. For stream tasks the state is
    also carried, detached, from one batch to the next.
    """

    def __init__(self, k1: int = 20, k2: int | None = None) -> None:
        k2 = k1 if k2 is None else k2
        if k1 < 1:
            raise ConfigError(f"'controllers.tbptt.k1' must be at least 1, got {k1}.")
        if k2 < k1:
            raise ConfigError(
                f"'controllers.tbptt.k2' ({k2}) must be at least k1 ({k1}): each "
                "window backpropagates through k2 steps to cover the k1 new losses."
            )
        self.k1 = k1
        self.k2 = k2

    def plan_windows(self, steps: int) -> list[Window]:
        overlap = self.k2 - self.k1
        return [
            Window(
                start=max(0, loss_start - overlap),
                loss_start=loss_start,
                stop=min(loss_start + self.k1, steps),
            )
            for loss_start in range(0, steps, self.k1)
        ]


@hookimpl
def rnnzoo_grad_controllers() -> dict[str, Any]:
    return {"tbptt": TBPTT}
