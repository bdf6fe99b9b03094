"""Benchmark results as markdown tables."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "cells": "rnnzoo / torch.nn >= 1.0 (fused kernels of the built-in cells)",
    "plugin": "a plugin cell through the generic step loop >= 0.7 x torch.nn",
    "train": "rnnzoo train (W&B offline, probes every 100 steps) >= 0.95 x the hand-written "
    "loop, and ahead of Lightning",
    "tbptt": "TBPTT k=100: peak memory at T=10,000 <= 1.2 x at T=1,000",
    "gradflow": "gradient-flow probes <= 5 % overhead at the default interval",
    "compile": "the plugin LSTM with model.compile >= 0.9 x torch.nn at B=16, T=1000",
    "threads": "trainer.threads=auto >= 0.9 x the best fixed thread count on the idle machine "
    "and with two busy background processes, and >= 3 x torch's default under load",
}
CONDITIONS = {"idle": "idle", "loaded": "2 busy processes"}


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    if not rows:
        return "(no rows)\n"
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _by_contender(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per size and contender of the plugin-cell section."""
    out = []
    for row in rows:
        size = f"{row['device']} B={row['batch']} T={row['steps']} H={row['hidden']}"
        for name in [k[: -len(" tok/s")] for k in row if k.endswith(" tok/s")]:
            out.append(
                {
                    "size": size,
                    "contender": name,
                    "tok/s": row[f"{name} tok/s"],
                    "x torch.nn": row.get(f"{name} / torch.nn"),
                    "peak MiB": row.get(f"{name} peak MiB"),
                    "first call s": row.get(f"{name} first call s"),
                }
            )
    return out


def _contender(name: str, threads: str) -> str:
    if name == "default":
        return f"torch default ({threads} threads, OpenMP's default wait)"
    if name == "auto, passive":
        return "`trainer.threads=auto`, `OMP_WAIT_POLICY=PASSIVE` whatever the load"
    return f"`trainer.threads={threads}`"


def _load(condition: dict[str, Any]) -> str:
    return f"{condition['load_start']['loadavg'][0]} → {condition['load_end']['loadavg'][0]}"


def _chosen(runs: list[list[list[int]]]) -> str:
    """Per run: the count it ended with (its last ``perf/threads``) and the step of
    its first choice, where ``auto``'s first measurement ended."""
    return ", ".join(f"{logged[-1][1]} (step {logged[0][0]})" if logged else "-" for logged in runs)


def _waits(passive: list[list[float]] | None) -> str | None:
    """How the runs' OpenMP threads waited, from their ``perf/omp_passive``."""
    if not passive or not all(passive):
        return None  # not recorded: an older result
    flags = [run[0] for run in passive]
    counts = {"passive": flags.count(1.0), "spin, then sleep": flags.count(0.0)}
    return ", ".join(f"{how} {n}/{len(flags)}" for how, n in counts.items() if n)


def threads_table(result: dict[str, Any]) -> str:
    """Condition by contender: median training time and ratios (benchmarks/threads.py)."""
    rows = []
    for name, c in result["conditions"].items():
        for contender, v in c["contenders"].items():
            rows.append(
                {
                    "condition": CONDITIONS[name],
                    "load 1 min, start → end": _load(c),
                    "contender": _contender(contender, c["threads"][contender]),
                    "train s (median)": v["median_train_s"],
                    "× best fixed": v["x_best_fixed"],
                    "× each round's best": v.get("x_round_best"),
                    "× default": v["x_default"],
                    "OpenMP's threads wait": _waits(v.get("perf/omp_passive")),
                    "auto: threads per run (decided at)": _chosen(v["perf/threads"])
                    if contender.startswith("auto")
                    else None,
                }
            )
    return table(rows)


def threads_summary(result: dict[str, Any]) -> str:
    """One row per condition, the ratio to the best fixed count per contender."""
    rows = []
    for name, c in result["conditions"].items():
        row: dict[str, Any] = {"× best fixed thread count": CONDITIONS[name]}
        for contender, v in c["contenders"].items():
            threads = c["threads"][contender]
            labels = {"auto": "auto", "auto, passive": "auto, always passive"}
            labels["default"] = "torch default"
            label = labels.get(contender, f"{threads} thread{'s' * (threads != '1')}")
            row[label] = v["x_best_fixed"]
        row["best fixed"] = c.get("best_fixed")
        row["auto × each round's best"] = c["contenders"]["auto"].get("x_round_best")
        row["auto × default"] = c["contenders"]["auto"]["x_default"]
        rows.append(row)
    return table(rows)


def threads_markdown(result: dict[str, Any]) -> str:
    """The threads benchmark's tables and the conditions they were measured in."""
    lines = [f"## Threads on a shared machine\n\nTarget: {TARGETS['threads']}.\n"]
    for name, c in result["conditions"].items():
        lines.append(
            f"- {CONDITIONS[name]}: {c['started']}, {c['rounds']} rounds of {c['steps']} steps, "
            f"{c['cores']} cores; `uptime` at the start: {c['load_start']['uptime']}; "
            f"at the end: {c['load_end']['uptime']}"
        )
    lines.append(f"\n{result['cpu']}, {result['cpu_count']} CPUs, Python {result['python']}.\n")
    return "\n".join(lines) + "\n" + threads_table(result) + "\n" + threads_summary(result)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    parts = [
        f"# rnnzoo benchmarks ({results['profile']})\n",
        f"{m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads, torch "
        f"{m['torch']}, Python {m['python']}; load average {m['load_average_1min']} at the "
        f"start, {results.get('load_average_1min_end')} at the end"
        + (f"; GPU {m['cuda_device']}" if "cuda_device" in m else "")
        + ". Forward + backward, tokens/s are medians over interleaved rounds, ratios "
        "medians of per-round ratios.\n",
    ]
    if "note" in results:
        parts.append(f"{results['note']}\n")
    if "cells" in results:
        columns = [
            "device",
            "cell",
            "batch",
            "steps",
            "hidden",
            "rnnzoo tok/s",
            "torch.nn tok/s",
            "hand loop tok/s",
            "rnnzoo / torch.nn",
            "rnnzoo / hand loop",
            "rnnzoo peak MiB",
            "torch.nn peak MiB",
            "hand loop peak MiB",
        ]
        parts += [
            "## Built-in cells",
            f"Target: {TARGETS['cells']}.\n",
            table(results["cells"], columns),
        ]
    if "plugin" in results:
        parts += [
            "## Plugin cell (LSTM maths) through the generic step loop",
            f"Target: {TARGETS['plugin']}.\n",
            table(_by_contender(results["plugin"])),
        ]
    if "train" in results:
        train = results["train"]  # one row per contender; older results: one summary row
        rows = train if isinstance(train, list) else [train]
        parts += ["## Training loop", f"Target: {TARGETS['train']}.\n", table(rows)]
    if "tbptt" in results:
        parts += [
            "## Truncated BPTT memory",
            f"Target: {TARGETS['tbptt']}.\n",
            table(results["tbptt"]),
        ]
    if "gradflow" in results:
        parts += [
            "## Gradient-flow probes (benchmarks/gradflow_overhead.py)",
            f"Target: {TARGETS['gradflow']}.\n",
            table([results["gradflow"]]),
        ]
    if "compile" in results:
        compiled = results["compile"]
        parts += [
            "## model.compile (benchmarks/compile_loop.py)",
            f"Target: {TARGETS['compile']}.\n",
        ]
        if "steady" in compiled:
            parts += [table(compiled["steady"]), table(compiled["compile"])]
        else:
            parts.append(table([compiled]))
    if "threads" in results:
        parts.append(threads_markdown(results["threads"]))
    parts.append(
        "Seconds per section: "
        + ", ".join(f"{k} {v:g}" for k, v in results.get("seconds", {}).items())
        + "\n"
    )
    return "\n".join(parts)
