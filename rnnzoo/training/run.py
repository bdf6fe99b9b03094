"""The run folder: its layout, the files in it, and loading a trained run back.

A run folder holds ``config.yaml`` (the experiment, interpolations as written),
``run.json`` (the W&B run id), ``metrics.jsonl`` and ``gradflow.jsonl`` (one JSON
object per logged step), ``summary.json``, the task's own files (vocabularies) and
``checkpoints/ckpt-STEP.pt``, and the writer's lock ``.lock``. Every file is
replaced atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rnnzoo import checkpoint
from rnnzoo.config import flatten, to_yaml
from rnnzoo.errors import CheckpointError, ConfigError, UsageError
from rnnzoo.files import truncate_jsonl, write_json, write_text_atomic
from rnnzoo.model import RNNModel
from rnnzoo.provenance import SOURCES_FILE, recorded_sources, require_components
from rnnzoo.registry import Registry
from rnnzoo.task import Task
from rnnzoo.tracking import Tracker
from rnnzoo.training.lock import LOCK_NAME, RunLock


class RunFolder:
    """The files of one run, under ``path``, and the lock of the process that owns
    them (:meth:`claim`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        #: where each component of the run came from (rnnzoo.provenance), written to
        #: sources.json and the W&B config
        self.sources: dict[str, str] = {}
        self.lock = RunLock(self.path)

    def check_new(self) -> None:
        """Refuse a folder that holds anything (a lock file alone is nothing): a new
        run there would mix its files with another run's."""
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise UsageError(f"'{self.path}' is a file, not a folder; pass another --run-dir.")
        held = sorted(p.name for p in self.path.iterdir() if p.name != LOCK_NAME)
        if not held:
            return
        if not self.lock.held and (self.path / LOCK_NAME).exists():
            self.lock.acquire()  # if a process is writing the folder, this says which
            self.release()
        what = (
            "a run"
            if self.is_run()
            else f"files ({', '.join(held[:3])}{', ...' * (len(held) > 3)})"
        )
        hint = (
            f"Continue it with `rnnzoo train --resume {self.path}`, or pass"
            if self.is_run()
            else "Pass"
        )
        raise UsageError(
            f"'{self.path}' already holds {what}; a new run there would mix its checkpoints "
            f"and metrics with them. {hint} another --run-dir."
        )

    def claim(self, new: bool) -> None:
        """Become the folder's one writer: create it (a new run: it must not exist
        yet, or be empty) and take its lock, held until :meth:`release`."""
        try:
            if new:
                self.check_new()
                with contextlib.suppress(FileExistsError):  # empty (checked above); the
                    os.makedirs(self.path)  # lock decides between two processes starting
            self.lock.acquire()
        except OSError as exc:
            raise ConfigError(
                f"Cannot write the run folder '{self.path}': {exc.strerror or exc}. "
                "Pass a writable folder with --run-dir."
            ) from exc
        if new:
            try:
                self.check_new()  # another process may have started a run here meanwhile
            except UsageError:
                self.release()
                raise

    def release(self) -> None:
        self.lock.release()

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    def is_run(self) -> bool:
        return self.config_path.is_file()

    def read_run_id(self) -> str | None:
        """The W&B run id stored by the run (None if ``run.json`` is missing)."""
        try:
            return str(json.loads((self.path / "run.json").read_text())["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def prepare(
        self,
        cfg: DictConfig,
        task: Task,
        run_id: str,
        resumed_at: int | None,
    ) -> None:
        """Write the config, the run id and the task's files into the claimed folder.
        A resumed run drops every JSONL row logged after its checkpoint: those
        steps run again."""
        try:
            write_text_atomic(self.config_path, to_yaml(cfg))
            write_json(self.path / "run.json", {"run_id": run_id})
            if self.sources:
                write_json(self.path / SOURCES_FILE, self.sources)
            task.save(self.path)
            if resumed_at is not None:
                for log in self.path.glob("*.jsonl"):
                    truncate_jsonl(log, resumed_at)
        except OSError as exc:
            raise ConfigError(
                f"Cannot write the run folder '{self.path}': {exc.strerror or exc}. "
                "Pass a writable folder with --run-dir."
            ) from exc

    def tracker(
        self,
        cfg: DictConfig,
        run_id: str,
        tags: list[str],
        task: Task | None = None,
    ) -> Tracker:
        """Start logging to ``metrics.jsonl`` and W&B (the run's id and config); with
        the ``task``, W&B's summary and model artifacts follow its main metric
        (:func:`rnnzoo.training.evaluate.main_metric`)."""
        from rnnzoo.training.evaluate import main_metric  # it imports this module

        t = cfg.tracking
        return Tracker(
            self.path,
            run_id=run_id,
            config={**flatten(cfg), **{f"sources.{k}": v for k, v in self.sources.items()}},
            project=t.project,
            name=t.name or self.path.name,
            group=t.group,
            tags=tags,
            wandb_mode=t.wandb_mode,
            entity=t.entity,
            notes=t.notes,
            job_type=t.job_type,
            main_metric=main_metric(cfg, task) if task is not None else None,
            log_model=t.log_model,
            lock=self.lock.fileno,
        )

    def save_checkpoint(
        self,
        step: int,
        state: dict[str, Any],
        keep: int,
        keep_before: int | None = None,
        tracker: Tracker | None = None,
    ) -> Path:
        """Write a rotating checkpoint, once W&B has every row logged before it (a
        resume logs only the steps after the checkpoint); with
        ``tracking.log_model: all`` the tracker logs it as a W&B model artifact too."""
        if tracker is not None:
            tracker.flush()
        path = checkpoint.save(self.path, step, state, keep, keep_before)
        if tracker is not None and tracker.log_model == "all":
            tracker.log_checkpoint(path, ["latest"], step=step)
        return path

    def read_summary(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self.path / "summary.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def latest_checkpoint(self) -> Path:
        return checkpoint.latest(self.path)


def restore_model(model: RNNModel, state: dict[str, Any], path: Path) -> None:
    """Load a checkpoint's weights, or say in one sentence why they do not fit."""
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(misfit(path, exc)) from exc


def misfit(path: Path, exc: BaseException) -> str:
    # torch's first line only says that loading failed; the next one says why
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (
        f"Checkpoint '{path}' does not fit this experiment's model "
        f"({lines[1].rstrip('.') if len(lines) > 1 else exc}). Resume with the run's own "
        "config.yaml, or start a new run."
    )


@dataclass
class LoadedRun:
    """A trained run, read back: its config, task, model (in eval mode, on
    ``device``, with the weights of checkpoint ``step``) and folder."""

    cfg: DictConfig
    task: Task
    model: RNNModel
    step: int
    device: torch.device
    folder: RunFolder
    registry: Registry


def load_run(
    path: str | Path,
    overrides: Iterable[str] = (),
    plugins: Iterable[str] = (),
    registry: Registry | None = None,
) -> LoadedRun:
    """Read a run folder back for evaluation or sampling: ``config.yaml`` (with
    ``overrides``, e.g. another dev file), the plugins it names, the task's saved
    files and the latest checkpoint's weights. Nothing in the folder changes."""
    from rnnzoo import config
    from rnnzoo.build import build_experiment_model, build_task
    from rnnzoo.plugins import plugin_manager
    from rnnzoo.training.device import resolve_device

    folder = RunFolder(Path(path))
    if not folder.is_run():
        raise UsageError(
            f"'{folder.path}' is not an rnnzoo run folder (no config.yaml). Pass the folder "
            "a previous `rnnzoo train` wrote."
        )
    cfg = config.load(folder.config_path, list(overrides))
    if registry is None:
        registry = Registry(plugin_manager([*cfg.plugins, *plugins]))
    require_components(cfg, registry, recorded_sources(folder.path))
    device = resolve_device(cfg.trainer.device)
    task = build_task(cfg, registry)
    task.load(folder.path)
    model = build_experiment_model(cfg, task, registry)
    latest = folder.latest_checkpoint()
    state = checkpoint.load(latest)
    restore_model(model, state, latest)
    model.to(device).eval()
    return LoadedRun(cfg, task, model, int(state["step"]), device, folder, registry)
