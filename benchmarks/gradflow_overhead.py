"""How much training time the gradient-flow probes cost, in one process.

    python benchmarks/gradflow_overhead.py                  # experiments/adding.yaml
    python benchmarks/gradflow_overhead.py trainer.steps=500 --repeats 3

After one short warm-up run (not counted: the first training in a process pays
for imports, thread pools and first allocations), the experiment trains
``--repeats`` pairs of runs, one with probes at its ``gradflow.every`` (100 in
adding.yaml) and one with ``gradflow.every=0``, in alternating order, each run in
its own folder with W&B offline as configured, so the probes' W&B scalars and
images are part of the cost. Both variants must end at the same loss, since a
probe may not change training.

Three numbers, each ``with / without - 1`` (target: <= 5 %):

* ``overhead_wall``: the trainer's own ``time/wall_s`` (the loop, evaluations and
  the final checkpoint; not W&B start-up), total over the runs;
* ``overhead_cpu``: the process's CPU time over ``fit()``, total over the runs,
  which other work on a shared machine disturbs less than wall time;
* ``overhead_accounted``: the CPU time spent inside the probes themselves (probe,
  JSONL, W&B logging and figures: every hook of the built-in
  ``rnnzoo_plugins.gradflow_probes`` plugin, timed) against the rest of the same run: the number the two above estimate,
  without their noise.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rnnzoo import config, hookimpl
from rnnzoo.events import TrainingRun
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer
from rnnzoo_plugins import gradflow_probes as probes

ROOT = Path(__file__).resolve().parents[1]


class TimedProbes:
    """The built-in gradient-flow plugin with the CPU time of its hooks added up."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def _timed(self, hook: Callable[..., None], **kwargs: Any) -> None:
        started = time.process_time()
        hook(**kwargs)
        self.cpu += time.process_time() - started

    @hookimpl
    def rnnzoo_train_start(self, run: TrainingRun) -> None:
        self._timed(probes.rnnzoo_train_start, run=run)

    @hookimpl
    def rnnzoo_after_backward(self, run: TrainingRun, step: int) -> None:
        self._timed(probes.rnnzoo_after_backward, run=run, step=step)

    @hookimpl
    def rnnzoo_before_optimizer_step(self, run: TrainingRun, step: int) -> None:
        self._timed(probes.rnnzoo_before_optimizer_step, run=run, step=step)

    @hookimpl
    def rnnzoo_step_end(self, run: TrainingRun, step: int) -> None:
        self._timed(probes.rnnzoo_step_end, run=run, step=step)

    @hookimpl
    def rnnzoo_train_end(self, run: TrainingRun) -> None:
        self._timed(probes.rnnzoo_train_end, run=run)


def train(
    experiment: Path, overrides: list[str], every: int | None, out: Path
) -> tuple[dict[str, float], float, float]:
    """Train once: the summary, the CPU seconds of ``fit()`` and of the probes."""
    extra = ["trainer.progress=false"] + ([] if every is None else [f"gradflow.every={every}"])
    cfg = config.load(experiment, [*overrides, *extra])
    pm = plugin_manager()
    pm.unregister(probes)  # the same hooks, timed
    timed = TimedProbes()
    pm.register(timed, "timed-gradflow-probes")
    trainer = Trainer(cfg, Registry(pm), out)
    started = time.process_time()
    summary = trainer.fit()
    return summary, time.process_time() - started, timed.cpu


def total_overhead(seconds: dict[str, list[float]]) -> float:
    """``with / without - 1`` over the total time of each variant's runs.

    The runs go with-without, without-with, ...: over whole pairs of pairs a
    machine that speeds up or slows down during the benchmark weighs equally on
    both sides, which a median of per-pair ratios does not ensure."""
    return round(sum(seconds["with"]) / sum(seconds["without"]) - 1, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the experiment")
    parser.add_argument("--experiment", type=Path, default=ROOT / "experiments" / "adding.yaml")
    parser.add_argument("--repeats", type=int, default=2, help="runs per variant")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    every = config.load(args.experiment, args.overrides).gradflow.every
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if every <= 0:
        parser.error("the experiment has gradflow.every=0: there are no probes to measure")

    times: dict[str, list[float]] = {"with": [], "without": []}
    cpu: dict[str, list[float]] = {"with": [], "without": []}
    losses: dict[str, set[float]] = {"with": set(), "without": set()}
    accounted: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(args.experiment, [*args.overrides, "trainer.steps=100"], 0, Path(tmp) / "warm-up")
        for repeat in range(args.repeats):
            order = ["with", "without"] if repeat % 2 == 0 else ["without", "with"]
            for variant in order:
                out = Path(tmp) / f"{variant}-{repeat}"
                every_now = None if variant == "with" else 0
                summary, seconds, probe_seconds = train(
                    args.experiment, args.overrides, every_now, out
                )
                times[variant].append(summary["time/wall_s"])
                cpu[variant].append(seconds)
                losses[variant].add(summary["train/loss"])
                if variant == "with":
                    accounted.append(probe_seconds / (seconds - probe_seconds))
                    probes = len((out / "gradflow.jsonl").read_text().splitlines())
    result = {
        "experiment": args.experiment.name,
        "gradflow.every": every,
        "probes_per_run": probes,
        "steps": int(summary["step"]),
        "wall_s_with": [round(t, 2) for t in times["with"]],
        "wall_s_without": [round(t, 2) for t in times["without"]],
        "cpu_s_with": [round(t, 2) for t in cpu["with"]],
        "cpu_s_without": [round(t, 2) for t in cpu["without"]],
        "overhead_wall": total_overhead(times),
        "overhead_cpu": total_overhead(cpu),
        "overhead_accounted": [round(a, 4) for a in accounted],
        "same_training": losses["with"] == losses["without"] and len(losses["with"]) == 1,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
