"""SIGINT and SIGTERM during training: finish the step, checkpoint, stop."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

from tqdm import tqdm


class StopRequest:
    """Set by the first SIGINT/SIGTERM; a second one raises ``KeyboardInterrupt``."""

    def __init__(self) -> None:
        self.requested = False
        #: data-parallel: whether any rank was asked to stop, agreed after each step's
        #: backward so that all stop after the same step (None: one process)
        self.agreed: bool | None = None

    @property
    def now(self) -> bool:
        """Whether to stop after the current step."""
        return self.requested if self.agreed is None else self.agreed

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """While open, a signal lets the current step finish (the loop then writes a
        checkpoint and stops); outside the main thread signals cannot be caught, so
        nothing changes there."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: object) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            tqdm.write(
                f"rnnzoo: {signal.Signals(signum).name}: stopping after this step "
                "(send it again to stop at once)",
                file=sys.stderr,
            )

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
