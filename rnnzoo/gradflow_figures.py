"""When a run's gradient-flow figures are drawn, and where.

The probes (:mod:`rnnzoo.gradflow`) take milliseconds; drawing their two figures
(:func:`rnnzoo.plots.gradflow_figures`) takes hundreds. So a probe is drawn only
while drawing stays within a share of the training thread's CPU time
(:class:`rnnzoo.timeshare.TimeShare`), and the drawing itself happens in the
figure process (:mod:`rnnzoo.figure_process`), on another core, while training
goes on. Where that process cannot start or fails, the figures are drawn in the
training process instead, within the same budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rnnzoo.figure_process import FigureProcess
from rnnzoo.gradflow import GradflowResult
from rnnzoo.plots import gradflow_figures
from rnnzoo.timeshare import TimeShare

#: seconds :meth:`GradflowFigures.finish` waits for a drawing in flight
FINISH_WAIT = 60.0


class GradflowFigures:
    """A run's gradient-flow figures in ``folder``: the line plot of the latest
    probe and the heatmap over all probes so far (``rows``, the first layer's
    curves, at ``steps``).

    :meth:`add` records a probe and starts a drawing when the budget allows:
    ``share`` of the training thread's CPU time since this object was made, the
    first drawing estimated at ``first_cost`` seconds, later ones at the CPU time
    the last one took. With ``aside`` the figure process draws, and
    :meth:`collect` returns the figures once it has; otherwise they are drawn at
    once and :meth:`add` returns them. :meth:`finish` draws the latest probe at
    the end of training if it was not drawn, in this process.
    """

    def __init__(
        self, folder: Path, share: float = 0.01, first_cost: float = 0.5, aside: bool = True
    ) -> None:
        self.folder = folder
        self.share = share
        self.rows: list[list[float]] = []
        self.steps: list[int] = []
        self._latest: tuple[int, dict[str, list[float]]] | None = None
        self._drawn = True
        self._budget = TimeShare(first_cost)
        self._aside = aside
        self._process: FigureProcess | None = None
        self._sent = 0  # rows the figure process has
        self.busy = False  # a drawing is in flight

    def add(self, step: int, result: GradflowResult) -> dict[str, Path]:
        """Record one probe; draw it when the budget allows. Returns ``{W&B key:
        path}`` of the figures drawn since the last call (empty when none)."""
        self.rows.append(list(result.per_step["layer0/dir0"]))
        self.steps.append(step)
        self._latest = (step, result.per_step)
        self._drawn = False
        images = self.collect()
        if not self.busy and self._budget.allows(self.share):
            images.update(self._draw())
        return images

    def collect(self, timeout: float = 0.0) -> dict[str, Path]:
        """The figures of the drawing in flight once the figure process has drawn
        them (waiting up to ``timeout`` seconds); empty until then."""
        if not self.busy or self._process is None:
            return {}
        try:
            answer = self._process.answer(timeout)
        except (EOFError, OSError):
            answer = ("error", "the figure process ended")
        if answer is None:
            return {}
        self.busy = False
        if answer[0] == "drawn":
            self._budget.charge(answer[2])
            images: dict[str, Path] = answer[1]
            return images
        self._give_up()
        return {}

    def finish(self) -> dict[str, Path]:
        """Wait for the drawing in flight; draw the latest probe if it was not
        drawn. Returns the figures drawn; the figure process then ends."""
        images = self.collect(FINISH_WAIT)
        if self.busy:  # the figure process hangs
            self._give_up()
        if not self._drawn:
            images.update(self._draw_here())
        self.close()
        return images

    def close(self) -> None:
        """End the figure process (a drawing in flight is left to finish, and its
        probe counts as not drawn). A later drawing starts a new one, which is
        sent every row."""
        if self._process is not None:
            self._process.close()
            self._process = None
        if self.busy:
            self.busy = self._drawn = False
        self._sent = 0

    def _draw(self) -> dict[str, Path]:
        """Hand the latest probe to the figure process, or draw it here without one."""
        if self._aside and self._process is None:
            try:
                self._process = FigureProcess()
            except OSError:
                self._aside = False
        if self._process is None:
            return self._draw_here()
        assert self._latest is not None
        step, curves = self._latest
        try:
            self._process.draw(
                self.folder, curves, step, self.rows[self._sent :], self.steps[self._sent :]
            )
        except OSError:
            self._give_up()
            return self._draw_here()
        self._sent = len(self.rows)
        self.busy = self._drawn = True
        return {}

    def _draw_here(self) -> dict[str, Path]:
        if self._latest is None:
            return {}
        step, curves = self._latest
        with self._budget.timed():
            images = gradflow_figures(self.folder, curves, step, self.rows, self.steps)
        self._drawn = True
        return images

    def _give_up(self) -> None:
        """The figure process failed: draw here from now on, the latest probe again."""
        self.close()
        self._aside = self._drawn = False

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the heatmap's rows; a figure process holding the old ones ends."""
        self.close()
        self.rows = [list(r) for r in state.get("rows", [])]
        self.steps = list(state.get("steps", []))
