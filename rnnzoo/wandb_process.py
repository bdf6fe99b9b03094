"""W&B in a process of its own (:mod:`rnnzoo.wandb_worker`), seen from training.

Each call is a pickled message on a socket pair. The caller only pickles it and
leaves it in an outbox (about 0.1 ms for a row, where W&B's own Python takes 1 to
4 ms for a row and 10 to 20 ms for a table or image, docs/performance.md); a
thread of this process writes the outbox to the socket. So a send takes no lock
and cannot be cut in half: it may come from a signal handler, or from output
written while a value is being pickled, and ``KeyboardInterrupt`` (delivered to
the main thread only) never stops a message half-written. The W&B process runs
the calls in the order they were sent; :meth:`WandbProcess.wait` returns once it
has run all of them.

The first failure (W&B's own, a value that cannot be pickled, or the W&B process
gone) is kept in :attr:`WandbProcess.error`; from then on calls are dropped, and
nothing here waits on a process that is gone.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from rnnzoo.sideprocess import launch, reap
from rnnzoo.wandb_console import Console

#: seconds a failed W&B process has to tear W&B down before it is killed
STOP_WAIT = 10.0
#: answers the W&B process sends: what happened, and its values
Event = tuple[Any, ...]


class WandbProcess:
    """Starts the W&B process; :meth:`call` sends it calls, in order."""

    def __init__(self, on_event: Callable[[Event], None], lock: int | None = None) -> None:
        """``lock``: a locked file's descriptor that the W&B process keeps open
        until it ends (and marks as its own if training goes first)."""
        self.error: str | None = None
        self._on_event = on_event
        self._waits = 0
        self._released = False
        self._pid = os.getpid()
        self._outbox: deque[bytes | None] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        try:
            self._process, self._conn = launch(
                "rnnzoo.wandb_worker",
                "main",
                "" if lock is None else str(lock),
                keep=() if lock is None else (lock,),
            )
        except OSError:
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            raise
        self._writer = threading.Thread(target=self._write, name="rnnzoo-wandb", daemon=True)
        self._writer.start()
        self._console = Console(self.send) if os.environ.get("WANDB_CONSOLE") != "off" else None

    def call(self, name: str, *arguments: Any) -> None:
        """Send one call (nothing after a failure); handle what has come back."""
        self.send((name, *arguments))
        self.poll()

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue one message, from any thread, a signal handler too (nothing after a
        failure, nor from a process forked from this one)."""
        if self.error is not None or os.getpid() != self._pid:
            return
        try:
            data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            self.error = (
                f"a {message[0]} call for W&B holds a value that cannot be sent to the "
                f"W&B process ({type(exc).__name__}: {exc}); log numbers, strings, "
                "numpy arrays or W&B's own objects"
            )
            return
        self._outbox.append(data)
        self._wake()

    def poll(self) -> None:
        """Handle every answer that has arrived, without waiting."""
        with contextlib.suppress(OSError):
            while self.error is None and self._conn.poll(0):
                self._receive()

    def wait(self) -> None:
        """Return once the W&B process has run every call sent so far, or has failed."""
        self._waits += 1
        token = self._waits
        self.send(("wait", token))
        while self.error is None:
            if self._receive() == ("waited", token):
                return

    def close(self) -> None:
        """Let the W&B process finish the run and write it out, then end it."""
        if self._console is not None:
            self._console.stop()
        self.send(("close",))
        while self.error is None and self._receive() != ("closed",):
            pass
        self._release()
        if self._process.wait() != 0 and self.error is None:
            self.error = f"the W&B process ended with exit code {self._process.returncode}"

    def stop(self) -> None:
        """End the W&B process after a failure: it tears W&B down, or finishes the
        run once this side has closed, and ends by itself; one that has not after
        :data:`STOP_WAIT` seconds is killed."""
        if self._console is not None:
            self._console.stop()
        self._release()
        reap(self._process, STOP_WAIT)

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: it is awake anyway
            os.write(self._wake_w, b"\0")

    def _write(self) -> None:
        """The writer thread: sends the outbox in order until :meth:`_release`
        (after a failed send, it only empties the outbox)."""
        broken = False
        while True:
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                return
            while self._outbox:
                data = self._outbox.popleft()
                if data is None:
                    return
                if broken:
                    continue
                try:
                    self._conn.send_bytes(data)
                except OSError:
                    broken = True
                    self._gone()

    def _release(self) -> None:
        """Stop the writer thread after what it has queued, then close the socket:
        the W&B process then sees this side end. Once."""
        if self._released:
            return
        self._released = True
        self._outbox.append(None)
        self._wake()
        self._writer.join()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            self._conn.close()

    def _receive(self) -> Event | None:
        """The next answer (waiting for it), handled; None once the process failed.
        Interrupted halfway, the stream is lost: W&B is then off."""
        try:
            event: Event = pickle.loads(self._conn.recv_bytes())
        except (OSError, EOFError):
            self._gone()
            return None
        except BaseException:
            self.error = "interrupted while waiting for the W&B process"
            raise
        if event[0] == "error":
            self.error = str(event[1])
        else:
            self._on_event(event)
        return event

    def _gone(self) -> None:
        if self.error is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(1.0)  # a killed process has its exit status soon
            code = self._process.poll()
            self.error = "the W&B process " + (
                "stopped answering" if code is None else f"ended with exit code {code}"
            )
