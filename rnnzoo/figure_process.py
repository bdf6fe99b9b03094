"""The figure process: draws a run's gradient-flow figures beside training.

Drawing the two figures takes matplotlib 0.3 to 0.5 s of CPU. In the training
process that time comes out of the training thread (a thread of its own would
still hold the interpreter most of that time); here the training process hands
over the numbers of one drawing and goes on, and the figure process draws them
on another core. :class:`rnnzoo.gradflow_figures.GradflowFigures` decides when
to draw and falls back to drawing in the training process when this one cannot
start or fails.

Each message is a pickled ``("draw", folder, curves, step, new_rows,
new_steps)``: the figure process adds ``new_rows`` and ``new_steps`` to the
heatmap's rows it keeps, draws (:func:`rnnzoo.plots.gradflow_figures`) and
answers ``("drawn", {W&B key: path}, cpu_seconds)``, or ``("error", text)``. It
ends when the training process closes its end of the socket, or goes away.
"""

from __future__ import annotations

import contextlib
import pickle
import subprocess
import sys
import time
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rnnzoo.sideprocess import answer_requests, launch, reap

#: seconds a figure process that has been told to end may take before it is killed
END_WAIT = 2.0


class FigureProcess:
    """The training side of one figure process; it ends with this object, at the
    latest when the training process exits."""

    def __init__(self) -> None:
        """Raises ``OSError`` when the process cannot start."""
        self.process, self._conn = launch("rnnzoo.figure_process", "serve")
        self.close = weakref.finalize(self, _end, self.process, self._conn)

    def draw(
        self,
        folder: Path,
        curves: dict[str, list[float]],
        step: int,
        new_rows: Sequence[Sequence[float]],
        new_steps: Sequence[int],
    ) -> None:
        """Hand over one drawing. Raises ``OSError`` when the process is gone."""
        message = ("draw", folder, curves, step, list(new_rows), list(new_steps))
        self._conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def answer(self, timeout: float = 0.0) -> tuple[Any, ...] | None:
        """The answer to the drawing in flight, waiting up to ``timeout`` seconds
        for it (None: not yet). Raises ``EOFError`` or ``OSError`` when the
        process is gone."""
        if not self._conn.poll(timeout):
            return None
        answer: tuple[Any, ...] = pickle.loads(self._conn.recv_bytes())
        return answer


def _end(process: subprocess.Popen[bytes], conn: Connection) -> None:
    """Close the socket (the process then ends after its drawing) and reap it."""
    with contextlib.suppress(OSError):
        conn.close()
    reap(process, END_WAIT)


def serve() -> None:
    """The figure process's main loop (started by :class:`FigureProcess`).
    matplotlib loads once the first message has been read: a large one (a resumed
    run's heatmap rows) would otherwise hold the training thread in its send while
    this process starts."""
    rows: list[Sequence[float]] = []
    steps: list[int] = []

    def draw(request: bytes) -> tuple[Any, ...]:
        _, folder, curves, step, new_rows, new_steps = pickle.loads(request)
        rows.extend(new_rows)
        steps.extend(new_steps)
        from rnnzoo.plots import gradflow_figures

        started = time.process_time()
        images = gradflow_figures(folder, curves, step, rows, steps)
        return ("drawn", images, time.process_time() - started)

    answer_requests(Connection(int(sys.argv[1])), draw)
