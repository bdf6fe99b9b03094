"""A share of a thread's time for optional work: drawing figures, logging tables.

Work is allowed while the time it has taken, the next piece included (estimated
by the last piece, at first by ``first_cost`` seconds), stays within ``share`` of
the time the training thread has run since the budget was made. Times are CPU
times (``time.thread_time``), not the wall clock, so that a run waiting for a busy
machine's cores earns no extra work by waiting. Make the budget and ask
:meth:`TimeShare.allows` on the training thread; :meth:`TimeShare.timed` times
work on the thread running it, :meth:`TimeShare.charge` counts work timed elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class TimeShare:
    """What optional work has cost so far, against the thread's time since made."""

    def __init__(self, first_cost: float = 0.0) -> None:
        self.spent = 0.0
        self.cost = first_cost
        self._start = time.thread_time()

    def allows(self, share: float) -> bool:
        """Whether one more piece of work keeps the total within ``share``."""
        return self.spent + self.cost <= share * (time.thread_time() - self._start)

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Charge the CPU time of the block (on the thread running it), failed or not."""
        started = time.thread_time()
        try:
            yield
        finally:
            self.charge(time.thread_time() - started)

    def charge(self, seconds: float) -> None:
        """Count a piece of work that took ``seconds`` of CPU time (anywhere)."""
        self.cost = seconds
        self.spent += seconds
