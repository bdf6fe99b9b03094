"""Start a helper process beside training: W&B's (:mod:`rnnzoo.wandb_process`)
and the one that draws figures (:mod:`rnnzoo.figure_process`).

A helper is ``python -c`` running one function of an rnnzoo module, with one end
of a socket pair as its first argument. It does not re-run the training script
(as ``multiprocessing``'s spawn would, for a script without a ``__main__``
guard), starts without the working directory on its import path (a ``wandb.py``
lying there must not stand in for W&B), runs in a session of its own (Ctrl-C is
for training, which then ends its helpers) and shows nothing: its output is
discarded.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


def launch(
    module: str, function: str, *arguments: str, keep: tuple[int, ...] = ()
) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start ``module.function()`` in a helper process; returns the process and
    this side's end of the socket pair, whose other end's descriptor is the
    helper's first argument (``arguments`` follow it). ``keep``: more descriptors
    the helper inherits. Raises ``OSError`` when it cannot start."""
    entry = f"import sys; del sys.path[0]; from {module} import {function}; {function}()"
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", entry, str(theirs.fileno()), *arguments],
            pass_fds=(theirs.fileno(), *keep),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=_environment(),
        )
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return process, Connection(ours.detach())


def answer_requests(conn: Connection, handle: Callable[[bytes], tuple[Any, ...]]) -> None:
    """A helper's main loop: each request read from ``conn`` is answered with the
    pickled tuple ``handle`` returns for it, or ``("error", text)`` when ``handle``
    raises. Returns when training closes its end of the socket, or is gone."""
    while True:
        try:
            request = conn.recv_bytes()
        except (EOFError, OSError):  # training has closed its end, or is gone
            return
        try:
            answer = handle(request)
        except Exception as exc:
            answer = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send_bytes(pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))
        except OSError:
            return


def reap(process: subprocess.Popen[bytes], wait: float) -> None:
    """Wait up to ``wait`` seconds for a helper told to end (its socket closed),
    then kill it."""
    try:
        process.wait(wait)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _environment() -> dict[str, str]:
    """This process's environment; where this rnnzoo was imported from a source
    tree rather than an installed package, that tree first on the import path."""
    root = Path(__file__).resolve().parents[1]
    if root.name in ("site-packages", "dist-packages"):
        return dict(os.environ)
    path = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
