"""The W&B process: runs a training run's W&B calls, sent by
:class:`rnnzoo.wandb_process.WandbProcess`, in order.

W&B's Python (building rows, tables, charts, images and artifacts) takes
milliseconds per call. In the training process it takes the interpreter from the
training thread, even from a thread of its own, about one for one where a step
is mostly Python dispatch between short kernels (docs/performance.md). Here it
runs beside training instead, and W&B's console capture records what the
training process prints, which is forwarded to this process's (discarded)
stdout and stderr.

Started with two arguments: FD, one end of a socket pair, and the descriptor of
the run folder's lock it keeps open (or an empty one). Each message is a
pickled tuple ``(name, *arguments)`` (:data:`CALLS`); it answers
``("started", address)`` after ``init``, ``("sent", key, cpu_seconds)`` after
each table, ``("waited", token)`` after ``wait`` and ``("closed",)`` once the run
is written out. The first call that fails is answered ``("error", text)``, W&B
is torn down and the process ends. When the training process goes away without
``close`` (killed), the run is finished with every call that had arrived.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rnnzoo import wandb_offline, wandb_support


class Worker:
    """One W&B run, and the calls the training process sends it."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.run: Any = None
        self.run_id = ""
        self.answering = True

    def answer(self, *event: Any) -> None:
        """Tell the training process; once it is gone, go on without telling."""
        if self.answering:
            try:
                self.conn.send_bytes(pickle.dumps(event, pickle.HIGHEST_PROTOCOL))
            except OSError:
                self.answering = False

    def init(self, settings: dict[str, Any], main_metric: tuple[str, str] | None) -> None:
        import wandb

        self.run_id = settings["id"]
        # W&B's own messages would only reach the discarded output of this process
        run = wandb.init(**settings, settings=wandb.Settings(silent=True))
        self.run = run
        run.define_metric("trainer/step")
        run.define_metric("*", step_metric="trainer/step")
        if main_metric is not None:
            key, direction = main_metric
            run.define_metric(key, step_metric="trainer/step", summary=f"{direction},last")
        self.answer("started", wandb_support.address(run))

    def log(self, row: dict[str, Any]) -> None:
        self.run.log({key: wandb_support.from_plain(value) for key, value in row.items()})

    def table(
        self,
        step: int,
        key: str,
        columns: list[str],
        rows: list[list[Any]],
        newest: list[list[Any]],
        line: tuple[str, str, str] | None,
    ) -> None:
        import wandb

        started = time.thread_time()
        try:
            media: dict[str, Any] = {key: wandb.Table(columns=list(columns), data=rows)}
            if line is not None and newest:
                media[f"{key}_plot"] = wandb_support.line_chart(columns, newest, *line)
            self.run.log({**media, "trainer/step": step})
        finally:
            self.answer("sent", key, time.thread_time() - started)

    def images(self, step: int, pngs: dict[str, tuple[str, bytes]]) -> None:
        """PNG files sent as bytes: the training process redraws its own copies."""
        import wandb

        with tempfile.TemporaryDirectory(prefix="rnnzoo-images-") as folder:
            row: dict[str, Any] = {}
            for i, (key, (name, data)) in enumerate(pngs.items()):
                path = Path(folder) / f"{i}-{name}"
                path.write_bytes(data)
                row[key] = wandb.Image(str(path))
            self.run.log({**row, "trainer/step": step})  # W&B copies the files now

    def artifact(self, name: str, path: str, aliases: list[str], metadata: dict[str, Any]) -> None:
        import wandb

        artifact = wandb.Artifact(name, type="model", metadata=metadata)
        artifact.add_file(path, name="model.pt")  # a copy: rotation may delete it
        self.run.log_artifact(artifact, aliases=aliases)

    def summary(self, update: dict[str, Any]) -> None:
        self.run.summary.update(update)

    def console(self, stream: str, text: str) -> None:
        out = sys.stdout if stream == "stdout" else sys.stderr
        out.write(text)
        out.flush()

    def wait(self, token: int) -> None:
        self.answer("waited", token)

    def finish(self) -> None:
        """Write the run out; offline, a resumed run's new folder joins its first."""
        import wandb

        run, self.run = self.run, None
        if run is None:
            return
        offline, wandb_dir = run.offline, Path(run.settings.wandb_dir)
        run.finish()
        wandb.teardown()
        if offline:
            wandb_offline.join_parts(wandb_dir, self.run_id)


#: the calls the training process may send, by name
CALLS = ("init", "log", "table", "images", "artifact", "summary", "console", "wait")


def serve(conn: Connection, lock: int | None = None) -> None:
    """Run the calls that arrive until ``close``, the training process's end, or
    the first failure. ``lock``, the run folder's lock, stays held until this
    process ends; once training is gone, its file names this process."""
    worker = Worker(conn)
    try:
        while True:
            try:
                name, *arguments = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):  # the training process is gone: keep what it logged
                if lock is not None:
                    with contextlib.suppress(OSError):
                        os.ftruncate(lock, 0)
                        os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
                break
            if name == "close":
                break
            if name not in CALLS:
                raise ValueError(f"unknown W&B call {name!r}")
            getattr(worker, name)(*arguments)
        worker.finish()
    except BaseException as exc:  # noqa: BLE001 - W&B may raise anything, SystemExit too
        worker.answer("error", f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(BaseException):
            import wandb

            wandb.teardown()
        return
    worker.answer("closed")


def main() -> None:
    fd, lock = int(sys.argv[1]), int(sys.argv[2]) if sys.argv[2] else None
    for kept in (fd, lock):  # W&B's service must not keep them open
        if kept is not None:
            os.set_inheritable(kept, False)
    serve(Connection(fd), lock)
