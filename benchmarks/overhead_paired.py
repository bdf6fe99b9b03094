"""``rnnzoo train`` and the hand-written loop, step by step in one process.

    python benchmarks/overhead_paired.py                  # shipped, here and lean
    python benchmarks/overhead_paired.py --runs 4 --variants shipped here --json out.json

A plugin runs one step of the hand-written loop (``bench_training.HandWritten``,
the same LSTM, Adam and clipping) at the end of every ``rnnzoo train`` step of the
adding problem, and times both: the two loops see the same machine at the same
moment, so a burst of other work hits both. While a probe is with the probe
process it runs none, and makes up for them once the answer is logged: a
hand-written step in between would give the process that much longer to answer
for free. The figure per chunk of ``--chunk``
steps (the probe interval: one probe each) is the hand-written loop's time over
rnnzoo's; its median over chunks and runs is the result (above 1: rnnzoo is
faster). Variants, each a process of its own, one after another, ``--runs`` times:

- ``shipped``: as ``rnnzoo train`` runs by default (W&B offline, probes every 100
  steps, ``gradflow.process=auto``);
- ``here``: the same with ``gradflow.process=never`` (every probe in training);
- ``lean``: no probes, W&B disabled.

Chunk ratios here spread by about ±0.5 % where ``overhead.py``'s turns of
separate processes spread by ±5 %, so differences of 1 % show. What it cannot
show is a cost that lands on the hand-written steps of the same process: a full
pass of the garbage collector (100-150 ms) falls on whichever loop triggers it,
which the chunk median leaves out. ``overhead.py`` remains the benchmark of
record; this one is the magnifying glass. ``--set KEY=VALUE`` adds a config
override to every variant; ``--busy N`` runs N busy processes in the background
throughout (a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import machine, ratio_summary
from overhead_contender import SIZES, lightning_version, train_lightning, train_rnnzoo
from threads import background

HERE = Path(__file__).resolve().parent
#: variant -> the contender of ``overhead.py`` whose settings it trains with
#: (``lightning``: ``overhead.py``'s Lightning contender, when Lightning is installed)
VARIANTS = {"shipped": "rnnzoo", "here": "rnnzoo-here", "lean": "rnnzoo-lean", "lightning": ""}


class Paired:
    """Times the contender's steps and runs a hand-written step after each: call
    :meth:`tick` at the end of every contender step, with ``in_flight`` true while a
    probe is with the probe process (the hand-written steps then wait)."""

    def __init__(self, size: str) -> None:
        import torch
        from bench_training import HandWritten

        torch.set_num_threads(1)
        hidden, steps_t, batch = SIZES[size]
        torch.manual_seed(0)
        self.hand = HandWritten(hidden, batch, steps_t, lr=0.003, max_norm=1.0)
        self.times: dict[str, list[float]] = {"contender": [], "hand": []}
        self.mark: float | None = None
        self.owed = 0
        #: hand-written steps that waited for a probe's answer
        self.deferred = 0

    def tick(self, in_flight: bool = False) -> None:
        now = time.perf_counter()
        if self.mark is not None:
            self.times["contender"].append(now - self.mark)
        if in_flight:
            self.owed += 1  # nothing while the probe process works on a probe
            self.deferred += 1
        else:
            for _ in range(1 + self.owed):
                started = time.perf_counter()
                self.hand.step()
                self.times["hand"].append(time.perf_counter() - started)
            self.owed = 0
        self.mark = time.perf_counter()

    def result(self, steps: int, chunk: int, warmup: int) -> dict[str, Any]:
        """The hand-written loop's time over the contender's per chunk (``ratios``),
        and how many hand-written steps waited for a probe (``deferred``)."""
        # the contender's step s + 1 is timed from the end of hand's step s
        ours, hand = self.times["contender"][warmup:], self.times["hand"][warmup + 1 :]
        starts = range(0, steps - chunk + 1, chunk)
        ratios = [sum(hand[i : i + chunk]) / sum(ours[i : i + chunk]) for i in starts]
        return {"ratios": ratios, "deferred": self.deferred}


def one_run(
    variant: str, size: str, steps: int, chunk: int, warmup: int, more: list[str]
) -> dict[str, Any]:
    """Train ``variant`` with a hand-written step after each step (:meth:`Paired.result`)."""
    pair, total = Paired(size), warmup + steps + 1
    if variant == "lightning":
        hidden, steps_t, batch = SIZES[size]
        train_lightning(hidden, steps_t, batch, total, pair.tick)
        return pair.result(steps, chunk, warmup)

    from rnnzoo_plugins import gradflow_probes

    def tick(run: Any) -> None:
        pair.tick(gradflow_probes.in_flight(run))

    train_rnnzoo(size, total, VARIANTS[variant], tick, more)
    return pair.result(steps, chunk, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="readme")
    default = [v for v in VARIANTS if v != "lightning" or lightning_version() is not None]
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=default)
    parser.add_argument("--runs", type=int, default=2, help="processes per variant, in turns")
    parser.add_argument("--steps", type=int, default=1200, help="timed steps per run")
    parser.add_argument("--chunk", type=int, default=100, help="steps per ratio")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--set", action="append", default=[], help="a config override (rnnzoo variants only)"
    )
    parser.add_argument("--busy", type=int, default=0, help="busy background processes")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a run's own process
    args = parser.parse_args()
    if args.one:
        result = one_run(args.one, args.size, args.steps, args.chunk, args.warmup, args.set)
        print("@@ " + json.dumps(result), flush=True)
        return
    with background(args.busy):
        per_run = runs_in_turns(args)
    rows = [summary(variant, runs, args) for variant, runs in per_run.items()]
    for row in rows:
        print(json.dumps(row))
    if args.json:
        conditions = {**machine(), "torch_threads": 1, "busy": args.busy}
        result = {"machine": conditions, "rows": rows}
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def runs_in_turns(args: Any) -> dict[str, list[dict[str, Any]]]:
    """Each variant's runs (:meth:`Paired.result`), in turns with the others'."""
    per_run: dict[str, list[dict[str, Any]]] = {v: [] for v in args.variants}
    for number in range(args.runs):
        for variant in args.variants:
            command = [sys.executable, __file__, "--one", variant, "--size", args.size]
            command += ["--steps", str(args.steps), "--chunk", str(args.chunk)]
            command += ["--warmup", str(args.warmup), *(f"--set={s}" for s in args.set)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=HERE, check=False)
            if done.returncode != 0:
                sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
            line = next(x for x in done.stdout.splitlines() if x.startswith("@@ "))
            per_run[variant].append(json.loads(line[3:]))
            print(f"run {number + 1}/{args.runs} {variant}: median chunk ratio "
                  f"{statistics.median(per_run[variant][-1]['ratios']):.3f}", flush=True)  # fmt: skip
    return per_run


def summary(variant: str, runs: list[dict[str, Any]], args: Any) -> dict[str, object]:
    hidden, steps_t, batch = SIZES[args.size]
    ratios = [run["ratios"] for run in runs]
    return {
        "size": f"lstm-{hidden} T={steps_t} B={batch}",
        "variant": variant,
        "chunks": sum(len(r) for r in ratios),
        "chunk steps": args.chunk,
        **ratio_summary(ratios, "per run"),
        "chunk ratios, per run": [[round(r, 4) for r in run] for run in ratios],
        "hand-written steps deferred, per run": [run["deferred"] for run in runs],
    }


if __name__ == "__main__":
    main()
