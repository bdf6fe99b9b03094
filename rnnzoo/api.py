"""Training from Python (a notebook, a script) without the command line."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnzoo import config
from rnnzoo.tracking import choose_run_id


@dataclass
class RunResult:
    """What :func:`train` returns.

    ``summary`` is ``summary.json`` (final and best metrics, baselines);
    ``history`` holds every row of ``metrics.jsonl`` in order (each a dict with
    ``step``); ``run_dir`` is the run folder, which ``rnnzoo.load_run`` reads back.
    """

    summary: dict[str, Any]
    history: list[dict[str, Any]]
    run_dir: Path

    def metric(self, key: str) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of one logged metric, e.g. ``"val/loss"``."""
        return [(int(r["step"]), r[key]) for r in self.history if key in r]


def train(
    experiment: str | Path | None = None,
    overrides: Iterable[str] = (),
    *,
    run_dir: str | Path | None = None,
    plugins: Iterable[str] = (),
) -> RunResult:
    """Train an experiment, as ``rnnzoo train EXPERIMENT OVERRIDES`` does.

    ``experiment`` is a YAML file (or ``None`` for the defaults), ``overrides``
    ``key=value`` strings, ``plugins`` extra plugin modules or ``.py`` files.
    ``run_dir`` defaults to ``runs/NAME-TIME-RUNID``, as on the command line. A run
    that diverges returns with ``summary["status"] == "diverged"``.
    """
    from rnnzoo.commands.run import default_run_dir
    from rnnzoo.plugins import plugin_manager
    from rnnzoo.registry import Registry
    from rnnzoo.training import Trainer

    cfg = config.load(experiment, list(overrides))
    for spec in plugins:
        if spec not in cfg.plugins:
            cfg.plugins.append(str(Path(spec).resolve()) if spec.endswith(".py") else spec)
    run_id = choose_run_id()
    folder = Path(run_dir or cfg.run_dir or default_run_dir(cfg, run_id))
    registry = Registry(plugin_manager(list(cfg.plugins)))
    summary = Trainer(cfg, registry, folder, run_id=run_id).fit()
    with open(folder / "metrics.jsonl", encoding="utf-8") as f:
        history = [json.loads(line) for line in f if line.strip()]
    return RunResult(summary, history, folder)
