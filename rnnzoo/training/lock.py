"""One writer per run folder: an exclusive lock held for the whole run.

The lock is ``flock`` on ``RUN/.lock`` (the operating system releases it when the
process ends, however it ends, so a crashed run never leaves a stale lock); the
file holds the holder's process id, for the error message of a second writer.
Readers (``rnnzoo eval``, ``rnnzoo sample``) do not take it.
"""

from __future__ import annotations

import os
from pathlib import Path

from rnnzoo.errors import UsageError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not guarded there
    fcntl = None  # type: ignore[assignment]


class RunLock:
    """An exclusive, non-blocking lock on a run folder."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise a :class:`UsageError` naming the process that
        holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise UsageError(
                    f"Run folder '{self.path.parent}' is in use by another rnnzoo process "
                    f"(pid {holder}); two processes writing one run would overwrite each "
                    "other's checkpoints and logs. Wait for it to end (or stop it), or "
                    "pass another --run-dir."
                ) from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def fileno(self) -> int | None:
        """The locked file's descriptor while held: a process given a copy keeps
        the folder locked until it, too, has closed it (the W&B process does)."""
        return self._fd
