"""W&B in a process of its own (:mod:`rnnzoo.wandb_worker`), seen from training.

Each call is a message on a socket pair: sending one costs the training thread
tens of microseconds (pickling the values), where W&B's own Python costs it 1 to
4 ms for a row and 10 to 20 ms for a table or image (docs/performance.md). The
W&B process runs the calls in the order they were sent; :meth:`WandbProcess.wait`
returns once it has run all of them.

W&B's console capture can only see its own process, so while the W&B process
runs, what this process writes to ``sys.stdout`` and ``sys.stderr`` is also sent
there (unless ``WANDB_CONSOLE=off``); output written below Python, straight to
the file descriptors, is not.

The first failure (W&B's own, or the W&B process gone) is kept in
:attr:`WandbProcess.error`; from then on calls are dropped, and nothing here
waits on a process that is gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TextIO

#: seconds a failed W&B process has to tear W&B down before it is killed
STOP_WAIT = 10.0
#: answers the W&B process sends: what happened, and its values
Event = tuple[Any, ...]


class WandbProcess:
    """Starts the W&B process; :meth:`call` sends it calls, in order."""

    def __init__(self, on_event: Callable[[Event], None]) -> None:
        self.error: str | None = None
        self._on_event = on_event
        self._lock = threading.Lock()  # the training thread and the console both send
        self._waits = 0
        self._pid = os.getpid()
        ours, theirs = socket.socketpair()
        self._conn = Connection(ours.detach())
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "rnnzoo.wandb_worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # what it shows is this process's own output
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C is for training, which then closes W&B
                env=_environment(),
            )
        finally:
            theirs.close()
        self._console = _Console(self) if os.environ.get("WANDB_CONSOLE") != "off" else None

    def call(self, name: str, *arguments: Any) -> None:
        """Send one call (nothing after a failure); handle what has come back."""
        self.send((name, *arguments))
        self.poll()

    def poll(self) -> None:
        """Handle every answer that has arrived, without waiting."""
        with contextlib.suppress(OSError, EOFError):
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
        with contextlib.suppress(OSError):
            self._conn.close()
        if self._process.wait() != 0 and self.error is None:
            self.error = f"the W&B process ended with exit code {self._process.returncode}"

    def stop(self) -> None:
        """End the W&B process after a failure: it tears W&B down and ends by
        itself; one that has not after :data:`STOP_WAIT` seconds is killed."""
        if self._console is not None:
            self._console.stop()
        with contextlib.suppress(OSError):
            self._conn.close()
        try:
            self._process.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def send(self, message: tuple[Any, ...]) -> None:
        """Send one message as it is, from any thread (nothing after a failure,
        nor from a process forked from this one, which shares the socket)."""
        if self.error is not None or os.getpid() != self._pid:
            return
        try:
            with self._lock:
                self._conn.send(message)
        except OSError:
            self._gone()

    def _receive(self) -> Event | None:
        """The next answer (waiting for it), handled; None once the process failed."""
        try:
            event: Event = self._conn.recv()
        except (OSError, EOFError):
            self._gone()
            return None
        if event[0] == "error":
            self.error = str(event[1])
        else:
            self._on_event(event)
        return event

    def _gone(self) -> None:
        if self.error is None:
            code = self._process.poll()
            self.error = "the W&B process " + (
                "stopped answering" if code is None else f"ended with exit code {code}"
            )


def _environment() -> dict[str, str]:
    """This process's environment; where this rnnzoo was imported from a source
    tree rather than an installed package, that tree first on the import path."""
    root = Path(__file__).resolve().parents[1]
    if root.name in ("site-packages", "dist-packages"):
        return dict(os.environ)
    path = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


class _Console:
    """Sends what this process writes to ``sys.stdout`` and ``sys.stderr`` on to
    the W&B process too, until :meth:`stop`."""

    def __init__(self, process: WandbProcess) -> None:
        self._process = process
        self._streams = {
            "stdout": _Tee(sys.stdout, "stdout", self),
            "stderr": _Tee(sys.stderr, "stderr", self),
        }
        sys.stdout, sys.stderr = self._streams["stdout"], self._streams["stderr"]
        self.on = True

    def forward(self, stream: str, text: str) -> None:
        if self.on and text:
            self._process.send(("console", stream, text))

    def stop(self) -> None:
        """Stop sending; put the streams back unless another wrapper took them since."""
        self.on = False
        if sys.stdout is self._streams["stdout"]:
            sys.stdout = self._streams["stdout"].stream
        if sys.stderr is self._streams["stderr"]:
            sys.stderr = self._streams["stderr"].stream


class _Tee:
    """A text stream that writes to ``stream`` and forwards what it wrote."""

    def __init__(self, stream: TextIO, name: str, console: _Console) -> None:
        self.stream, self._name, self._console = stream, name, console

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        self._console.forward(self._name, text)
        return written

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self.stream, name)
