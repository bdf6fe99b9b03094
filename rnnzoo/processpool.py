"""A local pool of worker processes: run commands N at a time, each writing its
output to a log file, and stop them all cleanly on Ctrl-C.

Each command runs in a session of its own, so a Ctrl-C at the terminal reaches
only this process; it then sends exactly one SIGINT to every running command
(rnnzoo's trainer finishes its step, writes a checkpoint and exits 130) and starts
no more. A second Ctrl-C sends a second SIGINT (the trainer then stops at once).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: exit code of a process that ended because it could not be started
NOT_STARTED = 127


@dataclass
class Launch:
    """One command of the pool and, once it has run, how it ended."""

    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    state: str = "pending"  # pending, running, done, skipped (never started)
    exit_code: int | None = None
    wall_s: float | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class LocalPool:
    """Runs ``launches`` with at most ``jobs`` at a time, in order; ``on_end`` is
    called (from a worker thread) as each one ends."""

    def __init__(
        self, launches: Sequence[Launch], jobs: int, on_end: Callable[[Launch], None]
    ) -> None:
        self.launches = list(launches)
        self.jobs = jobs
        self.on_end = on_end
        self.signals = 0
        self._stopping = False
        self._lock = threading.Lock()

    def run(self, on_signal: Callable[[int], None] = lambda count: None) -> int:
        """Run every launch; return the number of SIGINT/SIGTERM received (0: none,
        every launch ran). ``on_signal`` is told about each one."""
        handled = (signal.SIGINT, signal.SIGTERM)
        main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, self._note) for s in handled} if main else {}
        try:
            with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="pool") as ex:
                futures = [ex.submit(self._one, launch) for launch in self.launches]
                forwarded = 0
                while True:
                    _, pending = wait(futures, timeout=0.2)
                    if self.signals > forwarded:
                        forwarded = self.signals
                        on_signal(forwarded)
                        self.interrupt()
                    if not pending:
                        break
                for future in futures:
                    future.result()  # a bug in a callback is not swallowed
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return self.signals

    def _note(self, signum: int, frame: Any) -> None:
        self.signals += 1

    def interrupt(self) -> None:
        """Start nothing more, and send SIGINT to every running process."""
        with self._lock:
            self._stopping = True
            for launch in self.launches:
                process = launch.process
                if launch.state == "running" and process and process.poll() is None:
                    process.send_signal(signal.SIGINT)

    def _one(self, launch: Launch) -> None:
        with self._lock:  # not started once interrupt() has run
            if self._stopping:
                launch.state = "skipped"
                return
            launch.log.parent.mkdir(parents=True, exist_ok=True)
            log = open(launch.log, "wb")  # noqa: SIM115 (closed below, after the process)
            started = time.monotonic()
            try:
                launch.process = subprocess.Popen(
                    launch.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=launch.env or None,
                    start_new_session=True,  # Ctrl-C at the terminal reaches the pool only
                )
            except OSError as exc:
                log.write(f"cannot start {launch.argv[0]}: {exc}\n".encode())
                launch.exit_code = NOT_STARTED
            launch.state = "running"
        try:
            if launch.process is not None:
                launch.exit_code = launch.process.wait()
        finally:
            log.close()
            launch.wall_s = time.monotonic() - started
            launch.state = "done"
        self.on_end(launch)
