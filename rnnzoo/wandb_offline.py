"""One offline folder per W&B run, however often the run was resumed.

Offline, W&B writes what each process logs to a folder of its own,
``RUN_DIR/wandb/offline-run-TIME-ID/``: the transaction log ``run-ID.wandb``,
the files it refers to (``files/``, read relative to the log's own folder) and
W&B's debug logs (``logs/``). A resumed run gets a new folder (wandb 0.31 names
it after the new start time and adds a suffix rather than reuse a folder, and
no setting changes that). ``wandb sync FOLDER`` uploads every ``*.wandb`` file
in a folder and syncs the parts of one run one after the other, in order of
their start time, as one run. So once W&B has finished with a part,
:func:`join_parts` moves it into the run's first folder:

- its log ``run-ID.wandb`` becomes ``run-ID.partN.wandb`` (N = 2, 3, ...);
- its ``files/`` join the first folder's: media are named after their content,
  so they do not clash, and a file that every part writes under the same name
  (``requirements.txt``) is replaced by the later part's, as W&B replaces a
  resumed run's files; every part's records stay in its own log;
- its ``logs/NAME.log`` become ``logs/NAME.partN.log``;
- what is left (``tmp/``) is removed, and ``wandb/latest-run`` and the
  ``wandb/debug*.log`` links point into the first folder.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

PART = re.compile(r"\.part(\d+)\.wandb$")


def part_number(log: Path) -> int:
    """1 for ``run-ID.wandb``, N for ``run-ID.partN.wandb``."""
    found = PART.search(log.name)
    return int(found.group(1)) if found else 1


def parts(folder: Path) -> list[Path]:
    """The transaction logs in an offline run folder, first part first."""
    return sorted(folder.glob("run-*.wandb"), key=lambda log: (part_number(log), log.name))


def folders(wandb_dir: Path, run_id: str) -> list[Path]:
    """The offline folders of run ``run_id`` in ``wandb_dir``, oldest first: the
    name holds the start time, to the second, and W&B adds ``-1``, ``-2``, ...
    to a second folder started in the same second."""
    name = re.compile(rf"offline-run-(\d{{8}}_\d{{6}})-{re.escape(run_id)}(?:-(\d+))?")
    found = {}
    for folder in wandb_dir.glob("offline-run-*"):
        match = name.fullmatch(folder.name)
        if match and (folder / f"run-{run_id}.wandb").is_file():
            found[folder] = (match.group(1), int(match.group(2) or 0))
    return sorted(found, key=found.__getitem__)


def join_parts(wandb_dir: Path, run_id: str) -> Path | None:
    """Move every later offline folder of run ``run_id`` into its first one (see
    the module), oldest first; return the first folder, or None when there is
    none. Only for folders that no W&B process writes to any more."""
    found = folders(wandb_dir, run_id)
    if not found:
        return None
    first, *later = found
    for folder in later:
        n = len(parts(first)) + 1
        _move_part(folder, first, run_id, n)
        links = {"latest-run": first, "debug.log": first / "logs" / f"debug.part{n}.log"}
        links["debug-internal.log"] = first / "logs" / f"debug-internal.part{n}.log"
        for name, target in links.items():  # W&B's links into the folder now gone
            link = wandb_dir / name
            if target.exists() and (link.is_symlink() or not link.exists()):
                link.unlink(missing_ok=True)
                link.symlink_to(target.relative_to(wandb_dir))
    return first


def _move_part(folder: Path, first: Path, run_id: str, n: int) -> None:
    os.replace(folder / f"run-{run_id}.wandb", first / f"run-{run_id}.part{n}.wandb")
    files = folder / "files"
    if files.is_dir():
        for path in sorted(p for p in files.rglob("*") if not p.is_dir()):
            target = first / "files" / path.relative_to(files)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    logs = folder / "logs"
    if logs.is_dir():
        (first / "logs").mkdir(exist_ok=True)
        for log in sorted(logs.iterdir()):
            os.replace(log, first / "logs" / f"{log.stem}.part{n}{log.suffix}")
    shutil.rmtree(folder)
