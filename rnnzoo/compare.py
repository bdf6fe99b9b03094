"""``rnnzoo compare``: finished runs, grouped into configurations, side by side.

A configuration is the set of runs whose ``config.yaml`` differ only in
``trainer.seed`` (and in what does not change training: ``tracking.*``,
``run_dir``, ``trainer.progress``). Every number is computed from the run
folders' own files (:mod:`rnnzoo.runfiles`): final and best metrics from
``summary.json``, the step of the best evaluation from ``metrics.jsonl``,
reach and decay from ``gradflow.jsonl``. Only finished runs (``finished`` or
``early_stopped``) enter the means; the others are listed with their status.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnzoo.errors import UsageError
from rnnzoo.runfiles import (
    GRADFLOW,
    METRICS,
    find_runs,
    main_key,
    number,
    read_config,
    read_jsonl,
    read_summary,
)

#: statuses whose runs enter the means
FINISHED = ("finished", "early_stopped")
#: keys that do not make runs different configurations
SAME_CONFIGURATION = ("trainer.seed", "run_dir", "trainer.progress")
IGNORED_SECTIONS = ("tracking.",)
#: the key that names a configuration's variant (rnnzoo.variants): a label on its own
VARIANT = "variant"
#: the training budgets that "equal budgets" looks at
BUDGETS = ("trainer.max_time", "trainer.max_tokens", "trainer.steps")


@dataclass
class Run:
    """One run folder, read."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown")) if self.summary else "unfinished"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def task(self) -> str:
        return str(self.config.get("task.name"))

    @property
    def main(self) -> str | None:
        return main_key(self.summary) if self.summary else None

    @property
    def identity(self) -> dict[str, str]:
        """The config without seed and bookkeeping, values as JSON text."""
        return {
            k: json.dumps(v, sort_keys=True)
            for k, v in self.config.items()
            if k not in SAME_CONFIGURATION and not k.startswith(IGNORED_SECTIONS)
        }

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / METRICS)

    def probes(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / GRADFLOW)

    def best_step(self, key: str) -> float | None:
        """The step of the evaluation whose ``key`` equals the best value the
        trainer kept (the closest one; the first of equals)."""
        best = number((self.summary or {}).get(f"best/{key}"))
        rows = [
            (value, row["step"])
            for row in self.metrics()
            if key in row and (value := number(row[key])) is not None
        ]
        if best is None or not rows:
            return None
        return float(min(rows, key=lambda vs: (abs(vs[0] - best), vs[1]))[1])


@dataclass
class Configuration:
    label: str
    runs: list[Run]

    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    def statuses(self) -> str:
        counts = Counter(r.status for r in self.runs)
        return ", ".join(f"{status} {n}" for status, n in counts.items())


def load(paths: list[Path]) -> list[Run]:
    """Every run folder given, or below a folder given (each once)."""
    runs: dict[Path, Run] = {}
    for path in paths:
        if not path.is_dir():
            raise UsageError(
                f"'{path}' is not a folder. Pass run folders (they hold config.yaml) or "
                "folders of runs, such as the group folder of `rnnzoo train -m`."
            )
        found = find_runs(path)
        if not found:
            raise UsageError(
                f"'{path}' holds no run folder (a folder with config.yaml). Pass the folder "
                "`rnnzoo train` or `rnnzoo train -m` wrote."
            )
        for run in found:
            runs.setdefault(run.resolve(), Run(run, read_config(run), read_summary(run)))
    return list(runs.values())


def check(runs: list[Run], where: str) -> str:
    """The main metric all runs share; a :class:`UsageError` when they differ in
    task or main metric, or when none finished."""
    for what, value_of in (("tasks", lambda r: r.task), ("main metrics", lambda r: r.main)):
        groups: dict[str, list[str]] = {}
        for run in runs:
            value = value_of(run)
            if value is not None:
                groups.setdefault(str(value), []).append(str(run.path))
        if len(groups) > 1:
            listed = "; ".join(
                f"{v}: {', '.join(ps[:4])}{' ...' * (len(ps) > 4)}" for v, ps in groups.items()
            )
            raise UsageError(
                f"The runs have different {what}, so their numbers cannot be compared in one "
                f"table ({listed}). Compare the runs of each separately: pass only their "
                "folders to rnnzoo compare."
            )
    finished = [r for r in runs if r.finished]
    if not finished:
        states = ", ".join(f"{r.path} ({r.status})" for r in runs[:6])
        raise UsageError(
            f"No finished run in {where}: {states}{' ...' * (len(runs) > 6)}. Only runs that "
            "wrote summary.json and did not diverge are compared; finish the others with "
            "`rnnzoo train --resume RUN`."
        )
    key = finished[0].main
    if key is None:
        raise UsageError(
            f"'{finished[0].path}/summary.json' has no best/ metric, so its main metric is "
            "unknown. It was not written by a finished `rnnzoo train`."
        )
    return key


def configurations(runs: list[Run]) -> list[Configuration]:
    """Runs grouped by everything but the seed, labelled by the keys in which the
    configurations differ (``model.cell=gru``), in the order of their first run;
    where the configurations' ``variant`` differs, by it (``variant=elman-relu``)
    and by the other keys that differ within one variant."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(json.dumps(run.identity, sort_keys=True), []).append(run)
    identities = [group[0].identity for group in groups.values()]
    keys = list(dict.fromkeys(k for ident in identities for k in ident))
    differing = [k for k in keys if len({ident.get(k, "<unset>") for ident in identities}) > 1]
    if VARIANT in differing:  # the settings a variant stands for need no label of their own
        differing = [VARIANT] + [k for k in differing if not _follows(k, identities)]
    out = []
    for group in groups.values():
        config = group[0].config
        label = " ".join(f"{k}={show(config.get(k))}" for k in differing) or "all runs"
        out.append(Configuration(label, group))
    return out


def _follows(key: str, identities: list[dict[str, str]]) -> bool:
    """Whether the value of ``key`` is the same in every configuration of one variant."""
    values: dict[str, set[str]] = {}
    for ident in identities:
        values.setdefault(ident.get(VARIANT, "<unset>"), set()).add(ident.get(key, "<unset>"))
    return all(len(v) == 1 for v in values.values())


def show(value: Any) -> str:
    """A config value as an override writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def stats(conf: Configuration, key: str) -> dict[str, Any]:
    """The row of one configuration (numbers over its finished runs)."""
    runs = conf.finished
    finals = [number((r.summary or {}).get(key)) for r in runs]
    finals_kept = [v for v in finals if v is not None]
    row: dict[str, Any] = {
        "n": len(runs),
        "final": mean(finals_kept),
        "sd": statistics.stdev(finals_kept) if len(finals_kept) > 1 else None,
        "best": mean([number((r.summary or {}).get(f"best/{key}")) for r in runs]),
        "best_step": mean([r.best_step(key) for r in runs]),
    }
    probes = [r.probes() for r in runs]
    for name in ("reach10", "reach1000", "decay"):
        for which, index in (("first", 0), ("last", -1)):
            row[f"{name}_{which}"] = mean(
                [number(p[index].get(f"gradflow/{name}")) if p else None for p in probes]
            )
    speeds = [
        v
        for r in runs
        for m in r.metrics()
        if (v := number(m.get("perf/tokens_per_s"))) is not None
    ]
    row["tokens_per_s"] = statistics.median(speeds) if speeds else None
    firsts = sorted({p[0]["step"] for p in probes if p})
    lasts = sorted({p[-1]["step"] for p in probes if p})
    row["probe_steps"] = (firsts, lasts)
    return row


def budgets(runs: list[Run]) -> str:
    """Which training budget the runs shared, or how their budgets differ."""
    shared, differing = [], []
    for key in BUDGETS:
        values: dict[str, list[str]] = {}
        for run in runs:
            value = run.config.get(key)
            values.setdefault(show(value), []).append(run.path.name)
        if set(values) == {"null"}:
            continue
        if len(values) == 1:
            shared.append(f"{key}={next(iter(values))}")
        else:
            differing.append(
                f"{key} differs: "
                + "; ".join(
                    f"{v} ({len(ps)} runs: {', '.join(ps[:3])}{' ...' * (len(ps) > 3)})"
                    for v, ps in values.items()
                )
            )
    text = f"Equal budgets: all runs: {', '.join(shared)}." if shared else ""
    if differing:
        text += (" But " if text else "Budgets differ. ") + ". ".join(differing) + "."
    return text
