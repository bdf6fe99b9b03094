"""Finding and reading the data files a task names, with errors a user can act on."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rnnzoo import datasets
from rnnzoo.errors import CheckpointError, DataError
from rnnzoo.files import write_text_atomic

#: the source checkout that holds ``plugins/``; relative data paths are also looked
#: up from here, so an experiment's paths work from any working directory
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def find(path: str | None, key: str, what: str) -> Path:
    """The file ``path`` (the value of config key ``key``): a file of a known dataset
    (``data:DATASET/FILE``, in the data folder; see rnnzoo.datasets), else the path as
    given, relative to the working directory, else relative to the project's checkout."""
    if path is None:
        raise DataError(f"No {what} given: pass '{key}=PATH'.")
    if datasets.is_reference(path):
        return datasets.resolve(path, key)
    given = Path(path).expanduser()
    bases = [] if given.is_absolute() else [Path.cwd(), PROJECT_ROOT]
    candidates = [Path(os.path.normpath(base / given)) for base in bases] or [given]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = " or ".join(f"'{c}'" for c in candidates)
    raise DataError(
        f"The {what} '{path}' ('{key}') does not exist (looked for {looked}). "
        f"Pass the path of your copy: '{key}=PATH'."
    )


def read_text(path: Path, key: str) -> str:
    """The UTF-8 text of ``path``; unreadable, non-UTF-8 or empty files raise DataError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"Cannot read '{path}' ('{key}'): {exc.strerror or exc}. Check the path "
            "and its permissions."
        ) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"'{path}' line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}). "
            f"Convert the file, e.g. `iconv -f latin1 -t utf-8`, and pass it as '{key}'."
        ) from exc
    if not text.strip():
        raise DataError(f"'{path}' ('{key}') is empty. Pass a file with data in it.")
    return text


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically: a full disk leaves the previous file whole."""
    write_text_atomic(path, json.dumps(data, ensure_ascii=False))


def read_json(path: Path) -> dict[str, Any]:
    """A vocabulary file from a run folder."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(
            f"The run folder has no '{path.name}' (looked for '{path}'); it holds the "
            "vocabulary the model was trained with. Use the folder a `rnnzoo train` of "
            "this task wrote."
        ) from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Cannot read the vocabulary file '{path}': {exc}.") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"The vocabulary file '{path}' does not hold a mapping.")
    return data
