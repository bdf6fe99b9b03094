"""Truncated backpropagation through time, TBPTT(k1, k2) of Williams & Peng (1990)."""

from __future__ import annotations

from typing import Any

from rnnzoo import GradController, Window, hookimpl
from rnnzoo.errors import ConfigError


class TBPTT(GradController):
    """Every ``k1`` steps, backpropagate the losses of those ``k1`` steps through
    the last ``k2`` steps (``k2`` >= ``k1``; default ``k2 = k1``).

    The state entering each window is detached, so memory holds at most ``k2``
    steps of graph however long the sequence. With ``k2 > k1`` the overlap is
    recomputed from a detached state stored ``k2`` steps back. For stream tasks the
    state is also carried, detached, from one batch to the next.
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
        windows = []
        for stop in range(self.k1, steps + self.k1, self.k1):
            stop = min(stop, steps)
            loss_start = windows[-1].stop if windows else 0
            windows.append(Window(start=max(0, stop - self.k2), loss_start=loss_start, stop=stop))
            if stop == steps:
                break
        return windows


@hookimpl
def rnnzoo_grad_controllers() -> dict[str, Any]:
    return {"tbptt": TBPTT}
