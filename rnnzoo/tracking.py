"""Where logged values go: metrics.jsonl in the run folder, and W&B."""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

from rnnzoo.errors import RnnzooError
from rnnzoo.files import write_text_atomic


def json_safe(value: Any) -> Any:
    """JSON has no NaN or Inf; write them as strings (``"nan"``, ``"inf"``), in
    lists and dicts too, so the line stays valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    return value


def truncate_jsonl(path: Path, step: int) -> None:
    """Drop the rows of ``path`` logged after ``step`` (a resumed run logs them
    again), and a last line cut short by a crash."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("step", 0) <= step:
            kept.append(row)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file, fsync, rename)."""
    text = json.dumps({k: json_safe(v) for k, v in data.items()}, indent=2, sort_keys=True)
    write_text_atomic(path, text)


class Tracker:
    """Logs every value to ``metrics.jsonl`` and, unless disabled, to a W&B run
    living in the run folder (offline unless ``WANDB_MODE`` or ``wandb_mode`` say
    otherwise). If W&B cannot start or fails later, training goes on with one
    warning and the JSONL file stays complete.
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
    ) -> None:
        self.run_dir = run_dir
        self.metrics_path = run_dir / "metrics.jsonl"
        try:
            self._jsonl = open(self.metrics_path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise RnnzooError(
                f"Cannot write '{self.metrics_path}': {exc.strerror}. Choose a writable --run-dir."
            ) from exc
        self.wandb_run: Any = None
        mode = os.environ.get("WANDB_MODE", wandb_mode)
        if mode != "disabled":
            self._start_wandb(run_id, config, project, name, group, tags, mode)

    def _start_wandb(
        self,
        run_id: str,
        config: dict[str, Any],
        project: str,
        name: str,
        group: str | None,
        tags: list[str],
        mode: str,
    ) -> None:
        try:
            import wandb

            self.wandb_run = wandb.init(
                dir=str(self.run_dir),
                id=run_id,
                resume="allow",
                project=project,
                name=name,
                group=group,
                tags=tags,
                config=config,
                mode=mode,  # type: ignore[arg-type]
                settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
            )
            self.wandb_run.define_metric("trainer/step")
            self.wandb_run.define_metric("*", step_metric="trainer/step")
        except Exception as exc:  # W&B must never stop a run
            self._wandb_failed(exc)

    def _wandb_failed(self, exc: BaseException) -> None:
        warnings.warn(
            f"W&B is unavailable ({type(exc).__name__}: {exc}); training goes on and "
            f"every value is still written to {self.metrics_path}.",
            stacklevel=3,
        )
        self.wandb_run = None
        # W&B's service may be gone: tear it down now, or its exit hook prints a traceback
        with contextlib.suppress(Exception):
            import wandb

            wandb.teardown()

    def log(self, step: int, values: dict[str, Any]) -> None:
        scalars = {k: json_safe(v) for k, v in values.items() if isinstance(v, (int, float))}
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        if self.wandb_run is not None:
            try:
                self.wandb_run.log({**values, "trainer/step": step})
            except Exception as exc:
                self._wandb_failed(exc)

    def log_images(self, step: int, images: dict[str, Path]) -> None:
        """PNG files already in the run folder, shown as W&B images."""
        if self.wandb_run is not None:
            try:
                import wandb

                media = {key: wandb.Image(str(path)) for key, path in images.items()}
                self.wandb_run.log({**media, "trainer/step": step})
            except Exception as exc:
                self._wandb_failed(exc)

    def summary(self, values: dict[str, Any]) -> None:
        write_json(self.run_dir / "summary.json", values)
        if self.wandb_run is not None:
            try:
                self.wandb_run.summary.update(values)
            except Exception as exc:
                self._wandb_failed(exc)

    def close(self) -> None:
        """Finish the W&B run; when no other run is active, also wait until W&B has
        written it out, so the run folder is complete when training returns."""
        self._jsonl.close()
        if self.wandb_run is not None:
            try:
                import wandb

                self.wandb_run.finish()
                if wandb.run is None:
                    wandb.teardown()
            except Exception as exc:
                self._wandb_failed(exc)
            self.wandb_run = None
