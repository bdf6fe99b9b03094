"""What training prints, passed on to the W&B process for W&B's console log.

W&B's console capture can only see its own process. So while the W&B process
runs (:mod:`rnnzoo.wandb_process`), ``sys.stdout`` and ``sys.stderr`` of the
training process are wrapped: what is written to them is written as before and
also handed to ``send`` as ``("console", "stdout" | "stderr", text)``, unless
``WANDB_CONSOLE=off``. Output that does not pass through these two objects is not
seen: C code writing straight to the file descriptors, ``sys.stdout.buffer``, or
a stream object taken before the wrapping (a logging handler made earlier).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

Send = Callable[[tuple[Any, ...]], None]


class Console:
    """Wraps ``sys.stdout`` and ``sys.stderr`` (those that exist) until :meth:`stop`."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.on = True
        self._tees: dict[str, _Tee] = {}
        if sys.stdout is not None:
            self._tees["stdout"] = sys.stdout = _Tee(sys.stdout, "stdout", self)
        if sys.stderr is not None:
            self._tees["stderr"] = sys.stderr = _Tee(sys.stderr, "stderr", self)

    def forward(self, stream: str, text: str) -> None:
        if self.on and text:
            self._send(("console", stream, text))

    def stop(self) -> None:
        """Stop passing output on; put each stream back unless another wrapper
        has taken its place since."""
        self.on = False
        if sys.stdout is self._tees.get("stdout"):
            sys.stdout = self._tees["stdout"].stream
        if sys.stderr is self._tees.get("stderr"):
            sys.stderr = self._tees["stderr"].stream


class _Tee:
    """A text stream that writes to ``stream`` and passes on what it wrote."""

    def __init__(self, stream: TextIO, name: str, console: Console) -> None:
        self.stream, self._name, self._console = stream, name, console

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        self._console.forward(self._name, text)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:  # flush, isatty, fileno, encoding, ...
        return getattr(self.stream, name)
