"""Files that are never left half-written, and JSON that stays valid."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Let ``write`` fill a temporary file beside ``path``, flush it to disk, then
    rename it over ``path``: readers see the old file or the new one, never a part.
    The temporary file (``.NAME-*.tmp``) is removed if anything fails."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_atomic` of UTF-8 ``text``."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8")))


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
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file, fsync, rename)."""
    text = json.dumps({k: json_safe(v) for k, v in data.items()}, indent=2, sort_keys=True)
    write_text_atomic(path, text)
