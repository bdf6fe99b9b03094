"""The text of ``rnnzoo compare``: the table (Markdown, also printed) and
``compare.md`` around it, which says where every number comes from."""

from __future__ import annotations

from typing import Any

from rnnzoo.compare import Configuration, Run
from rnnzoo.runfiles import fmt


def tokens(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def header(key: str) -> list[str]:
    return [
        "configuration",
        "seeds",
        f"{key} (mean ± sd)",
        f"best {key}",
        "best step",
        "reach10 (first → last probe)",
        "reach1000 (first → last)",
        "decay (first → last)",
        "tokens/s",
        "runs",
    ]


def cells(conf: Configuration, row: dict[str, Any]) -> list[str]:
    final = fmt(row["final"]) + (f" ± {fmt(row['sd'])}" if row["sd"] is not None else "")
    arrows = [
        f"{fmt(row[f'{name}_first'])} → {fmt(row[f'{name}_last'])}"
        for name in ("reach10", "reach1000", "decay")
    ]
    return [
        conf.label,
        str(row["n"]),
        final,
        fmt(row["best"]),
        fmt(row["best_step"]),
        *arrows,
        tokens(row["tokens_per_s"]),
        conf.statuses(),
    ]


def table(confs: list[Configuration], rows: list[dict[str, Any]], key: str) -> list[str]:
    """The Markdown table, one row per configuration."""

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    out = [line(header(key)), "|" + "---|" * len(header(key))]
    out += [line(cells(c, r)) for c, r in zip(confs, rows, strict=True)]
    return out


def probe_note(rows: list[dict[str, Any]]) -> str:
    firsts = sorted({s for r in rows for s in r["probe_steps"][0]})
    lasts = sorted({s for r in rows for s in r["probe_steps"][1]})
    if not firsts:
        return "The runs logged no gradient-flow probes (gradflow.every=0): no reach or decay."
    return (
        f"Gradient-flow probes: the first at step {', '.join(map(str, firsts))}, the last at "
        f"step {', '.join(map(str, lasts))}."
    )


def left_out(confs: list[Configuration]) -> list[str]:
    lines = []
    for conf in confs:
        for run in conf.runs:
            if not run.finished:
                seed = run.config.get("trainer.seed")
                lines.append(f"- `{run.path}` ({conf.label}, seed {seed}): {run.status}")
    return lines


def sources(confs: list[Configuration]) -> list[str]:
    return [
        f"- {conf.label}: "
        + ", ".join(f"`{r.path}` (seed {r.config.get('trainer.seed')})" for r in conf.runs)
        for conf in confs
    ]


def markdown(
    confs: list[Configuration],
    rows: list[dict[str, Any]],
    key: str,
    runs: list[Run],
    budget: str,
    figure: str,
) -> str:
    task = runs[0].task
    finished = sum(r.finished for r in runs)
    out = [
        "# Comparison of runs",
        "",
        f"{len(runs)} runs of task `{task}` in {len(confs)} configurations; {finished} "
        f"finished and enter the numbers below. Main metric: `{key}`.",
    ]
    out += ["", budget] if budget else []
    out += ["", *table(confs, rows, key), "", f"![{figure}]({figure})", ""]
    out += [
        "How to read it (every number comes from the run folders' own files):",
        "",
        "- **configuration**: the settings in which the configurations differ; the runs of "
        "one configuration differ only in `trainer.seed`.",
        "- **seeds**: the finished runs of the configuration (status `finished` or "
        "`early_stopped`); every number in the row is over them.",
        f"- **{key} (mean ± sd)**: the final `{key}` of `summary.json`, mean and sample "
        "standard deviation over seeds (no sd for one seed).",
        f"- **best {key}**: mean of `best/{key}` in `summary.json`, the best evaluation of "
        "each run.",
        f"- **best step**: mean over seeds of the step at which `{key}` was best "
        "(`metrics.jsonl`).",
        "- **reach10, reach1000, decay**: `gradflow/reach10`, `gradflow/reach1000` and "
        "`gradflow/decay` (layer 0) of the first and of the last probe in `gradflow.jsonl`, "
        "mean over seeds: how many steps back the gradient of the last loss travels before "
        "it has shrunk 10x and 1000x, and the slope of its log per step (see "
        "docs/gradient-flow.md).",
        "- **tokens/s**: the median of every `perf/tokens_per_s` row in `metrics.jsonl` of "
        "the configuration's finished runs (training throughput; runs that shared the "
        "machine slow each other down).",
        "- **runs**: how many runs of the configuration ended in each status.",
        "",
        probe_note(rows),
    ]
    gone = left_out(confs)
    if gone:
        out += ["", "Left out of the numbers (not finished, or diverged):", "", *gone]
    out += ["", "Runs:", "", *sources(confs), ""]
    return "\n".join(out)
