"""Checkpoints: written atomically, kept K at a time, read with weights_only=True."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from rnnzoo.errors import CheckpointError, RnnzooError
from rnnzoo.files import write_atomic

PATTERN = re.compile(r"^ckpt-(\d{8})\.pt$")
#: the checkpoint of the best evaluation so far, beside the rotating ones
BEST = "best.pt"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"ckpt-{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if PATTERN.match(p.name))


def step_of(path: Path) -> int:
    match = PATTERN.match(path.name)
    assert match is not None, path
    return int(match.group(1))


def save(
    run_dir: Path, step: int, state: dict[str, Any], keep: int, keep_before: int | None = None
) -> Path:
    """Write ``state`` for ``step`` atomically (temp file, fsync, rename) and delete
    all but the newest ``keep`` checkpoints, and the newest one before step
    ``keep_before`` when given (the last one trained on finite values while
    training is in trouble). A crash leaves the previous ones intact."""
    path = checkpoint_path(run_dir, step)
    _write(path, state)
    found = list_checkpoints(run_dir)
    kept = set(found[-keep:] if keep > 0 else [])
    if keep_before is not None:
        kept |= set([p for p in found if step_of(p) < keep_before][-1:])
    for old in found:
        if old not in kept:
            old.unlink(missing_ok=True)
    for stale in path.parent.glob(".*.pt-*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    return path


def save_best(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/best.pt`` atomically: the weights of the best evaluation
    so far, which rotation never deletes."""
    path = run_dir / "checkpoints" / BEST
    _write(path, state)
    return path


def _write(path: Path, state: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: torch.save(state, f))
    except OSError as exc:
        raise RnnzooError(
            f"Could not write checkpoint '{path}': {exc.strerror or exc}. Free disk "
            "space or choose a writable --run-dir; earlier checkpoints are untouched, "
            "so `rnnzoo train --resume` continues from the last one."
        ) from exc


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: tensors and plain containers
    only, so a checkpoint cannot run code."""
    if path.is_file() and not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(
            f"Checkpoint '{path}' is corrupt or truncated (not the zip archive torch.save "
            "writes). Delete it to resume from the previous checkpoint in the same folder."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"Checkpoint '{path}' does not exist.") from exc
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False; keep only the sentence that says why
        lines = [s.strip() for s in str(exc).splitlines()]
        reason = next((s for s in lines if "GLOBAL" in s or "Unsupported" in s), "no detail")
        reason = reason.split("WeightsUnpickler error: ")[-1].split(". ")[0].rstrip(".")
        raise CheckpointError(
            f"Checkpoint '{path}' was refused: it holds objects other than tensors and "
            f"plain containers ({reason}). rnnzoo loads checkpoints with weights_only=True "
            "so that a file cannot run code; only load checkpoints rnnzoo wrote."
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"Checkpoint '{path}' is corrupt or truncated ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}). Delete it to resume "
            "from the previous checkpoint in the same folder."
        ) from exc
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(
            f"Checkpoint '{path}' is not an rnnzoo checkpoint (no model state or step)."
        )
    return state


def retract(run_dir: Path, from_step: int) -> list[Path]:
    """Set aside the checkpoints of ``from_step`` and later (renamed to
    ``*.pt.diverged``, not deleted), so that resuming starts before that step."""
    moved = []
    for path in list_checkpoints(run_dir):
        if step_of(path) >= from_step:
            target = path.with_name(path.name + ".diverged")
            os.replace(path, target)
            moved.append(target)
    return moved


def latest(run_dir: Path) -> Path:
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(
            f"No checkpoint in '{run_dir / 'checkpoints'}'. Pass the folder of a run "
            "that saved at least one checkpoint (trainer.checkpoint_every)."
        )
    return found[-1]
