"""W&B calls on a thread of their own.

Logging a table, an image or an artifact runs milliseconds to tens of
milliseconds of W&B's own Python (a gradient-flow probe's table: about 17 ms, a
scalar row 1 to 4 ms on a 2-core CPU; ``benchmarks/step_parts.py``). On the
training thread that time is added to every probe and logging step; on this
thread, W&B's waits (files, its service) overlap training. W&B's own Python
still needs the interpreter, and takes it from the training thread about one for
one where a step is mostly Python dispatch between short kernels (a small model,
docs/performance.md); only another process would take that off too.

Calls run one at a time in the order they were sent, so W&B sees the same
sequence of steps as before. The first call that fails stops the rest and is
kept in :attr:`Sender.error` (whatever it raised, ``SystemExit`` included), for
the training thread to report; :meth:`wait` and :meth:`close` never hang on it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

#: calls waiting at most; a sender further behind makes the training thread wait
BACKLOG = 64
#: seconds between checks that the thread is still there while waiting on it
POLL = 0.1


class Sender:
    """Runs the calls given to :meth:`send` on one background thread, in order."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._calls: queue.Queue[Callable[[], object] | None] = queue.Queue(BACKLOG)
        self._thread = threading.Thread(target=self._work, name="rnnzoo-wandb", daemon=True)
        self._thread.start()

    def send(self, call: Callable[[], object]) -> None:
        """Run ``call`` after every call sent before it (nothing once one failed)."""
        if self.error is None:
            self._put(call)

    def wait(self) -> None:
        """Return once every call sent so far has run, or once one has failed."""
        done = threading.Event()
        self.send(done.set)
        while not done.wait(POLL) and self.error is None and self._thread.is_alive():
            pass

    def close(self) -> None:
        """Run what is left (nothing after a failure), then end the thread."""
        if self._put(None):
            self._thread.join()

    def stop(self, reason: BaseException) -> None:
        """Skip every call not yet run (``reason`` becomes :attr:`error` unless
        one failed already), then end the thread."""
        if self.error is None:
            self.error = reason
        self.close()

    def _put(self, item: Callable[[], object] | None) -> bool:
        """Queue ``item`` unless the thread has ended; a full queue waits for room."""
        while self._thread.is_alive():
            try:
                self._calls.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            if self.error is None:
                try:
                    call()
                except BaseException as exc:  # reported by the training thread
                    self.error = exc
