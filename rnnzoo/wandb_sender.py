"""W&B calls on a thread of their own.

Logging a table, an image or an artifact runs tens of milliseconds of W&B's own
Python (a gradient-flow probe's table: 20-40 ms on a 2-core CPU); a scalar row
about a millisecond. On the training thread that time is added to every probe
and logging step; on this thread it overlaps the next steps' kernels, during
which the training thread does not need the interpreter.

Calls run one at a time in the order they were sent, so W&B sees the same
sequence of steps as before. The first call that fails stops the rest and is
kept in :attr:`Sender.error`, for the training thread to report.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

#: calls waiting at most; a sender further behind makes the training thread wait
BACKLOG = 64


class Sender:
    """Runs the calls given to :meth:`send` on one background thread, in order."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self._calls: queue.Queue[Callable[[], object] | None] = queue.Queue(BACKLOG)
        self._thread = threading.Thread(target=self._work, name="rnnzoo-wandb", daemon=True)
        self._thread.start()

    def send(self, call: Callable[[], object]) -> None:
        """Run ``call`` after every call sent before it (nothing once one failed)."""
        if self.error is None and self._thread.is_alive():
            self._calls.put(call)

    def wait(self) -> None:
        """Return once every call sent so far has run."""
        if self._thread.is_alive():
            self._calls.join()

    def close(self) -> None:
        """Run what is left, then end the thread."""
        if self._thread.is_alive():
            self._calls.put(None)
            self._thread.join()

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            try:
                if call is None:
                    return
                if self.error is None:
                    call()
            except Exception as exc:  # reported by the training thread
                self.error = exc
            finally:
                self._calls.task_done()
