"""``rnnzoo train`` and the hand-written loop, step by step in one process.

    python benchmarks/overhead_paired.py                  # shipped, here and lean
    python benchmarks/overhead_paired.py --runs 4 --variants shipped here --json out.json

A plugin runs one step of the hand-written loop (``bench_training.HandWritten``,
the same LSTM, Adam and clipping) at the end of every ``rnnzoo train`` step of the
adding problem, and times both: the two loops see the same machine at the same
moment, so a burst of other work hits both. After a probe step it runs none, and
two after the next step: a probe handed to the probe process is waited for at the
end of the next step, and a hand-written step in between would give it that much
longer to answer. The figure per chunk of ``--chunk``
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
override to every variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import machine, ratio_summary
from overhead_contender import SIZES, rnnzoo_overrides

HERE = Path(__file__).resolve().parent
ADDING = HERE.parent / "experiments" / "adding.yaml"
#: variant -> the contender of ``overhead.py`` whose settings it trains with
VARIANTS = {"shipped": "rnnzoo", "here": "rnnzoo-here", "lean": "rnnzoo-lean"}


def one_run(
    variant: str, size: str, steps: int, chunk: int, warmup: int, more: list[str]
) -> list[float]:
    """Train ``variant`` with a hand-written step after each step; the chunk ratios."""
    import torch
    from bench_training import HandWritten

    from rnnzoo import config, hookimpl
    from rnnzoo.plugins import plugin_manager
    from rnnzoo.registry import Registry
    from rnnzoo.training import Trainer

    torch.set_num_threads(1)
    hidden, steps_t, batch = SIZES[size]
    torch.manual_seed(0)
    hand = HandWritten(hidden, batch, steps_t, lr=0.003, max_norm=1.0)
    times: dict[str, list[float]] = {"rnnzoo": [], "hand": []}
    total = warmup + steps + 1
    cfg = config.load(ADDING, [*rnnzoo_overrides(size, total, VARIANTS[variant]), *more])
    every = int(cfg.gradflow.every)

    class Pair:
        mark: float | None = None
        owed = 0

        @hookimpl(trylast=True)  # after every other plugin's end of the step
        def rnnzoo_step_end(self, step: int) -> None:
            now = time.perf_counter()
            if self.mark is not None:
                times["rnnzoo"].append(now - self.mark)
            if every > 0 and step % every == 0 and step < total:
                self.owed += 1  # a probe may be in flight: nothing in between
            else:
                for _ in range(1 + self.owed):
                    started = time.perf_counter()
                    hand.step()
                    times["hand"].append(time.perf_counter() - started)
                self.owed = 0
            self.mark = time.perf_counter()

    registry = Registry(plugin_manager())
    registry.pm.register(Pair())
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(cfg, registry, Path(tmp) / "run").fit()
    # rnnzoo's step s + 1 is timed from the end of hand's step s: skip the warm-up
    rn, hd = times["rnnzoo"][warmup:], times["hand"][warmup + 1 :]
    return [
        sum(hd[i : i + chunk]) / sum(rn[i : i + chunk]) for i in range(0, steps - chunk + 1, chunk)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="readme")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--runs", type=int, default=2, help="processes per variant, in turns")
    parser.add_argument("--steps", type=int, default=1200, help="timed steps per run")
    parser.add_argument("--chunk", type=int, default=100, help="steps per ratio")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--set", action="append", default=[], help="a config override")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a run's own process
    args = parser.parse_args()
    if args.one:
        ratios = one_run(args.one, args.size, args.steps, args.chunk, args.warmup, args.set)
        print("@@ " + json.dumps(ratios), flush=True)
        return
    per_run: dict[str, list[list[float]]] = {v: [] for v in args.variants}
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
                  f"{statistics.median(per_run[variant][-1]):.3f}", flush=True)  # fmt: skip
    rows = [summary(variant, runs, args) for variant, runs in per_run.items()]
    for row in rows:
        print(json.dumps(row))
    if args.json:
        result = {"machine": {**machine(), "torch_threads": 1}, "rows": rows}
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def summary(variant: str, runs: list[list[float]], args: Any) -> dict[str, object]:
    hidden, steps_t, batch = SIZES[args.size]
    return {
        "size": f"lstm-{hidden} T={steps_t} B={batch}",
        "variant": variant,
        "chunks": sum(len(r) for r in runs),
        "chunk steps": args.chunk,
        **ratio_summary(runs, "per run"),
    }


if __name__ == "__main__":
    main()
