"""Where logged values go: metrics.jsonl in the run folder, and W&B."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnzoo import wandb_support, wandb_tables
from rnnzoo.errors import RnnzooError, UsageError
from rnnzoo.files import json_safe, write_json
from rnnzoo.wandb_process import WandbProcess

#: what a run id may hold: it names the run folder and W&B's run, artifacts and files
RUN_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def choose_run_id() -> str:
    """The id of a new run: ``WANDB_RUN_ID`` when set (a W&B sweep agent sets it for
    every run it starts, so ``run.json``, the run folder and W&B agree), else eight
    random hex digits."""
    given = os.environ.get("WANDB_RUN_ID", "")
    if not given:
        return os.urandom(4).hex()
    if not RUN_ID.fullmatch(given):
        raise UsageError(
            f"WANDB_RUN_ID is {given!r}; a run id is 1 to 64 letters, digits, '_', '-' or "
            "'.' (it names the run folder and the W&B run). Unset it for a random id."
        )
    return given


def _rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file (none if it does not exist), torn lines left out."""
    rows = []
    with contextlib.suppress(OSError), open(path, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                rows.append(json.loads(line))
    return rows


class Tracker:
    """Logs every value to ``metrics.jsonl`` and, unless disabled, to a W&B run
    living in the run folder (offline unless ``WANDB_MODE``, a sweep agent or
    ``wandb_mode`` say otherwise). If W&B cannot start or fails later, training
    goes on with one warning and the JSONL file stays complete.

    ``main_metric`` is ``(key, "min" | "max")``: W&B's summary of ``key`` keeps
    its best and its last value, and checkpoints logged as model artifacts carry it.
    ``lock``, the run folder's lock (:class:`rnnzoo.training.lock.RunLock`), is held
    by the W&B process too, so the folder stays locked until W&B has written the
    run out, even when training was killed.
    W&B's calls, ``wandb.init`` included, run in a process of their own, in order
    (:mod:`rnnzoo.wandb_process`); :meth:`close` waits for them.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        run_id: str,
        config: dict[str, Any],
        project: str,
        name: str,
        group: str | None,
        tags: list[str],
        wandb_mode: str,
        entity: str | None = None,
        notes: str | None = None,
        job_type: str | None = None,
        main_metric: tuple[str, str] | None = None,
        log_model: bool | str = False,
        lock: int | None = None,
    ) -> None:
        self.run_dir, self.log_model = run_dir, log_model
        self.run_id = run_id
        self.config = config
        self.main_metric = main_metric
        self.metrics_path = run_dir / "metrics.jsonl"
        #: (step, value) of the main metric: the latest logged, and the best
        self.latest: tuple[int, float] | None = None
        self.best: tuple[int, float] | None = None
        self._last_step = 0
        for row in _rows(self.metrics_path):  # a resumed run: what it logged so far
            self._follow(int(row.get("step", 0)), row)
        try:
            self._jsonl = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise RnnzooError(
                f"Cannot write '{self.metrics_path}': {exc.strerror}. Choose a writable --run-dir."
            ) from exc
        self._wandb: WandbProcess | None = None
        self._tables = wandb_tables.Tables()
        mode = wandb_support.choose_mode(wandb_mode)
        if mode != "disabled":
            init: dict[str, Any] = dict(project=project, name=name, group=group, tags=tags)
            init.update(entity=entity, notes=notes, job_type=job_type, config=config)
            init.update(mode=mode, dir=str(run_dir), id=run_id, resume="allow")
            try:
                self._wandb = WandbProcess(self._answer, lock)
            except OSError as exc:  # W&B must never stop a run
                self._unavailable(f"the W&B process did not start: {exc}")
            else:
                self._call("init", init, main_metric)

    def _answer(self, event: tuple[Any, ...]) -> None:
        """What the W&B process reports back (see :mod:`rnnzoo.wandb_worker`)."""
        if event[0] == "started":
            wandb_support.announce(event[1])
        elif event[0] == "sent":
            self._tables.sent(event[1], event[2])

    def _call(self, name: str, *arguments: Any) -> None:
        """Have the W&B process run a call, after the calls sent before it; report
        a failure of an earlier one now."""
        if self._wandb is not None:
            self._wandb.call(name, *arguments)
            self._check()

    def _check(self) -> None:
        """Report a failure of W&B now, once (W&B is then off for the run)."""
        if self._wandb is not None and self._wandb.error is not None:
            process, self._wandb = self._wandb, None
            process.stop()
            self._unavailable(process.error)

    def _unavailable(self, error: str | None) -> None:
        warnings.warn(
            f"W&B is unavailable ({error}); training goes on and every value is "
            f"still written to {self.metrics_path}.",
            stacklevel=3,
        )

    def flush(self) -> None:
        """Return once W&B has had every call made so far, waiting table rows too."""
        self._send_waiting_rows()
        if self._wandb is not None:
            self._wandb.wait()
            self._check()

    def _send_waiting_rows(self) -> None:
        for message in self._tables.rest(self._last_step):
            self._call(*message)

    def log(self, step: int, values: dict[str, Any]) -> None:
        scalars = {k: json_safe(v) for k, v in values.items() if isinstance(v, (int, float))}
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        self._follow(step, values)
        if self._wandb is not None:
            row = {k: wandb_support.plain(v) for k, v in values.items()}
            self._call("log", {**row, "trainer/step": step})

    def _follow(self, step: int, values: dict[str, Any]) -> None:
        """Note the latest step, and the main metric's latest and best value."""
        self._last_step = max(self._last_step, step)
        if self.main_metric is None:
            return
        key, direction = self.main_metric
        value = values.get(key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        self.latest = (step, float(value))
        best = self.best
        if best is None or (value < best[1] if direction == "min" else value > best[1]):
            self.best = self.latest

    def log_images(self, step: int, images: dict[str, Path]) -> None:
        """PNG files in the run folder, shown as W&B images; they are read now, so
        the files may be redrawn at once."""
        if self._wandb is not None:
            pngs = {}
            for key, path in images.items():
                with contextlib.suppress(OSError):  # a figure not written is not shown
                    pngs[key] = (path.name, path.read_bytes())
            self._call("images", step, pngs)

    def log_table(
        self,
        step: int,
        key: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        line: tuple[str, str, str] | None = None,
        share: float | None = None,
    ) -> None:
        """``rows`` as a W&B table under ``key`` (non-finite numbers left empty);
        with ``line=(x, y, series)`` also a line chart ``{key}_plot`` of column
        ``y`` against column ``x``, one line per value of column ``series``; with
        ``share``, W&B's time on the key's tables kept within that share of the
        run's time, rows waiting for a later table (:mod:`rnnzoo.wandb_tables`).
        W&B only: without W&B nothing is written (keep your own file of the numbers)."""
        wandb_tables.check(key, columns, rows, line, share)  # with or without W&B
        if self._wandb is None:
            return
        self._last_step = max(self._last_step, step)
        data = [[wandb_support.cell(v) for v in row] for row in rows]
        for message in self._tables.add(step, key, columns, data, line, share):
            self._call(*message)

    def log_checkpoint(self, path: Path, aliases: list[str], *, step: int | None = None) -> None:
        """Log the checkpoint file ``path`` as a new version of the W&B model
        artifact ``model-<run id>`` (the file inside is ``model.pt``) with
        ``aliases``. Its metadata is the flattened config, ``step`` and the main
        metric: for alias ``best`` the best value logged and its step, else the
        latest value and ``step`` (default: the latest step logged). Nothing
        without W&B."""
        if self._wandb is None:
            return
        metadata: dict[str, Any] = dict(self.config)
        picked = self.best if "best" in aliases else self.latest
        metadata["step"] = step if step is not None else self._last_step
        if self.main_metric is not None and picked is not None:
            metadata[self.main_metric[0]] = picked[1]
            if "best" in aliases and step is None:
                metadata["step"] = picked[0]
        self._call("artifact", f"model-{self.run_id}", str(path), list(aliases), metadata)

    def summary(self, values: dict[str, Any]) -> None:
        """``summary.json``, and W&B's run summary; the main metric's W&B summary
        (its best and last value) is W&B's own."""
        write_json(self.run_dir / "summary.json", values)
        best = self.run_dir / "checkpoints" / "best.pt"
        if self.log_model == "best" and best.is_file():  # tracking.log_model
            self.log_checkpoint(best, ["best"])
        own = self.main_metric[0] if self.main_metric is not None else None
        self._call("summary", {k: v for k, v in values.items() if k != own})

    def close(self) -> None:
        """Finish the W&B run and wait until W&B has written it out, so the run
        folder is complete when training returns. Offline, a resumed run's new
        folder then joins the run's first one (:mod:`rnnzoo.wandb_offline`)."""
        self._jsonl.close()
        self._send_waiting_rows()
        if self._wandb is not None:
            self._wandb.close()
            self._check()
