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

from rnnzoo import wandb_offline, wandb_support, wandb_tables
from rnnzoo.errors import RnnzooError, UsageError
from rnnzoo.files import json_safe, write_json
from rnnzoo.wandb_sender import Sender

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
    W&B calls after ``wandb.init`` run on a thread of their own, in order
    (:mod:`rnnzoo.wandb_sender`); :meth:`close` waits for them.
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
        self.wandb_run: Any = None
        self._sender: Sender | None = None
        self._tables = wandb_tables.Tables()
        mode = wandb_support.choose_mode(wandb_mode)
        if mode != "disabled":
            init = dict(project=project, name=name, group=group, tags=tags, entity=entity)
            self._start_wandb(mode, {**init, "notes": notes, "job_type": job_type})

    def _start_wandb(self, mode: str, init: dict[str, Any]) -> None:
        try:
            import wandb

            # W&B's own messages stay off unless WANDB_SILENT says otherwise; system
            # metrics and console capture follow W&B's defaults and WANDB_* settings
            quiet = "WANDB_SILENT" not in os.environ and "WANDB_QUIET" not in os.environ
            run = wandb.init(
                dir=str(self.run_dir),
                id=self.run_id,
                resume="allow",
                config=self.config,
                mode=mode,  # type: ignore[arg-type]
                settings=wandb.Settings(silent=True) if quiet else None,
                **init,
            )
            self.wandb_run = run
            run.define_metric("trainer/step")
            run.define_metric("*", step_metric="trainer/step")
            if self.main_metric is not None:
                key, direction = self.main_metric
                run.define_metric(key, step_metric="trainer/step", summary=f"{direction},last")
            wandb_support.announce(run)
            self._sender = Sender()
        except Exception as exc:  # W&B must never stop a run
            self._wandb_failed(exc)

    def _wandb_failed(self, exc: BaseException) -> None:
        warnings.warn(
            f"W&B is unavailable ({type(exc).__name__}: {exc}); training goes on and "
            f"every value is still written to {self.metrics_path}.",
            stacklevel=3,
        )
        self.wandb_run = None
        if self._sender is not None:
            self._sender.stop(exc)  # what is still queued is skipped
            self._sender = None
        # W&B's service may be gone: tear it down now, or its exit hook prints a traceback
        with contextlib.suppress(Exception):
            import wandb

            wandb.teardown()

    def _later(self, call: Any) -> None:
        """Run ``call`` (which uses W&B) on the sender's thread, after the calls
        sent before it; report a failure of an earlier one now."""
        self._check_sender()
        if self._sender is not None:
            self._sender.send(call)

    def _check_sender(self) -> None:
        """Report a failure of an earlier W&B call now (W&B is then off for the run)."""
        if self._sender is not None and self._sender.error is not None:
            self._wandb_failed(self._sender.error)

    def flush(self) -> None:
        """Return once W&B has had every call made so far, waiting table rows too."""
        self._send_waiting_rows()
        self._catch_up()

    def _send_waiting_rows(self) -> None:
        if self.wandb_run is not None:
            for call in self._tables.rest(self.wandb_run, self._last_step):
                self._later(call)

    def _catch_up(self) -> None:
        """Return once the sender has run every call made so far (report a failure)."""
        if self._sender is not None:
            self._sender.wait()
            self._check_sender()

    def _send(self, step: int, values: dict[str, Any]) -> None:
        if self.wandb_run is not None:
            run, row = self.wandb_run, {**values, "trainer/step": step}
            self._later(lambda: run.log(row))

    def log(self, step: int, values: dict[str, Any]) -> None:
        scalars = {k: json_safe(v) for k, v in values.items() if isinstance(v, (int, float))}
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        self._follow(step, values)
        self._send(step, values)

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
        """PNG files already in the run folder, shown as W&B images. W&B reads a
        file when it logs it and the figures redraw theirs: logged at once, after
        the calls still waiting."""
        self._catch_up()
        if self.wandb_run is not None:
            try:
                import wandb

                row = {k: wandb.Image(str(p)) for k, p in images.items()}
                self.wandb_run.log({**row, "trainer/step": step})
            except Exception as exc:
                self._wandb_failed(exc)

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
        if self.wandb_run is None:
            return
        self._last_step = max(self._last_step, step)
        data = [[wandb_support.cell(v) for v in row] for row in rows]
        for call in self._tables.add(self.wandb_run, step, key, columns, data, line, share):
            self._later(call)

    def log_checkpoint(self, path: Path, aliases: list[str], *, step: int | None = None) -> None:
        """Log the checkpoint file ``path`` as a new version of the W&B model
        artifact ``model-<run id>`` (the file inside is ``model.pt``) with
        ``aliases``. Its metadata is the flattened config, ``step`` and the main
        metric: for alias ``best`` the best value logged and its step, else the
        latest value and ``step`` (default: the latest step logged). Nothing
        without W&B."""
        if self.wandb_run is None:
            return
        metadata: dict[str, Any] = dict(self.config)
        picked = self.best if "best" in aliases else self.latest
        metadata["step"] = step if step is not None else self._last_step
        if self.main_metric is not None and picked is not None:
            metadata[self.main_metric[0]] = picked[1]
            if "best" in aliases and step is None:
                metadata["step"] = picked[0]
        try:
            import wandb

            artifact = wandb.Artifact(f"model-{self.run_id}", type="model", metadata=metadata)
            artifact.add_file(str(path), name="model.pt")  # a copy: rotation may delete it
        except Exception as exc:
            self._wandb_failed(exc)
            return
        run = self.wandb_run
        names = list(aliases)
        self._later(lambda: run.log_artifact(artifact, aliases=names))

    def summary(self, values: dict[str, Any]) -> None:
        """``summary.json``, and W&B's run summary; the main metric's W&B summary
        (its best and last value) is W&B's own."""
        write_json(self.run_dir / "summary.json", values)
        best = self.run_dir / "checkpoints" / "best.pt"
        if self.log_model == "best" and best.is_file():  # tracking.log_model
            self.log_checkpoint(best, ["best"])
        if self.wandb_run is not None:
            own = self.main_metric[0] if self.main_metric is not None else None
            run, update = self.wandb_run, {k: v for k, v in values.items() if k != own}
            self._later(lambda: run.summary.update(update))

    def close(self) -> None:
        """Finish the W&B run; when no other run is active, also wait until W&B has
        written it out, so the run folder is complete when training returns.
        Offline, a resumed run's new folder then joins the run's first one."""
        self._jsonl.close()
        self._send_waiting_rows()
        if self._sender is not None:
            self._sender.close()
            self._check_sender()
        if self.wandb_run is not None:
            run, self.wandb_run = self.wandb_run, None
            try:
                import wandb

                offline, wandb_dir = run.offline, Path(run.settings.wandb_dir)
                run.finish()
                if wandb.run is None:
                    wandb.teardown()
                if offline:  # a resumed run's parts: one folder (rnnzoo.wandb_offline)
                    wandb_offline.join_parts(wandb_dir, self.run_id)
            except Exception as exc:
                self._wandb_failed(exc)
