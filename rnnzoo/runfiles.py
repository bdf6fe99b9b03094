"""Read a run folder's files as plain data, without plugins, torch or W&B: what
``rnnzoo compare`` and the multirun report need.

``config.yaml`` is read as plain YAML (keys that a newer or older rnnzoo adds or
drops are simply there or not), ``summary.json`` as JSON, and the JSONL logs row
by row (``"nan"``/``"inf"`` strings, which rnnzoo writes for non-finite values,
read back as floats; a last line cut short by a crash is skipped).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

CONFIG, SUMMARY = "config.yaml", "summary.json"
METRICS, GRADFLOW = "metrics.jsonl", "gradflow.jsonl"
#: folders inside a run folder that never hold another run
INSIDE_RUN = {"checkpoints", "gradflow", "wandb"}


def is_run(path: Path) -> bool:
    return (path / CONFIG).is_file()


def find_runs(path: Path) -> list[Path]:
    """``path`` if it is a run folder, else every run folder below it, in natural
    order (``2-...`` before ``10-...``). Run folders are not searched further."""
    if is_run(path):
        return [path]
    found = []
    for folder, subfolders, _ in os.walk(path):
        if is_run(Path(folder)):
            found.append(Path(folder))
            subfolders.clear()
        else:
            subfolders[:] = [d for d in subfolders if d not in INSIDE_RUN]
    return sorted(found, key=natural_key)


def natural_key(path: Path) -> list[list[Any]]:
    """Sort key that orders the numbers inside names by value."""
    return [
        [int(chunk) if i % 2 else chunk for i, chunk in enumerate(re.split(r"(\d+)", part))]
        for part in path.parts
    ]


def read_config(run: Path) -> dict[str, Any]:
    """``config.yaml`` flattened to ``{"model.cell": "lstm", ...}`` (empty mappings
    kept as ``{}``)."""
    data = yaml.safe_load((run / CONFIG).read_text(encoding="utf-8")) or {}
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node

    walk("", data)
    return flat


def read_summary(run: Path) -> dict[str, Any] | None:
    """``summary.json``, or None when the run has not written one (yet)."""
    try:
        data = json.loads((run / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete row of a JSONL log (an empty list when there is none)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def number(value: Any) -> float | None:
    """A logged value as a float (``"nan"`` and ``"inf"`` included), or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def main_key(summary: dict[str, Any]) -> str | None:
    """The run's main metric, ``val/mse`` say: the one whose best value the
    trainer kept as ``best/val/mse``."""
    keys = sorted(k for k in summary if k.startswith("best/"))
    return keys[0].removeprefix("best/") if keys else None


def fmt(value: float | None) -> str:
    """A number as tables show it: four significant digits; "–" for none."""
    if value is None:
        return "–"
    if math.isnan(value):
        return "nan"
    return f"{value:.4g}"
