"""Framework overhead per training step: ``rnnzoo train`` against a hand-written
PyTorch loop and, when it is installed, PyTorch Lightning, on the same model.

    python benchmarks/overhead.py                 # README job and LSTM-256, 12 rounds
    python benchmarks/overhead.py --sizes readme --baseline ../rnnzoo-before --json out.json

The model is the adding problem's LSTM with a linear readout, Adam, global-norm
clipping at 1.0, at two sizes: ``readme`` (``experiments/adding.yaml`` as the
README runs it: LSTM-64, T = 50, batch 64), where the kernels are small and every
microsecond of bookkeeping shows, and ``large`` (LSTM-256, T = 100, batch 64),
where the kernels dominate. Contenders:

- ``hand``: the loop a user writes by hand (``loss.item()`` every step);
- ``lightning``: ``lightning.Trainer`` with ``gradient_clip_val=1.0``, no logger,
  no checkpoints, no progress bar (skipped when Lightning is not installed);
- ``rnnzoo``: ``rnnzoo train`` as shipped: W&B offline, JSONL logs every 25
  steps, gradient-flow probes every 100 steps;
- ``rnnzoo-here``: the same with ``gradflow.process=never`` (every probe in the
  training process);
- ``rnnzoo-lean``: the same with ``gradflow.every=0`` and W&B disabled;
- ``rnnzoo@base``, ``rnnzoo-here@base`` and ``rnnzoo-lean@base`` with
  ``--baseline CHECKOUT``: the same from another checkout of rnnzoo (an earlier
  revision), for before/after figures measured in the same turns.

Each contender is its own process with one torch thread, and all of them train
at once, in turns: after ``--warmup`` steps each waits for a word from this
script, trains ``--chunk`` steps, reports their time and waits again, so a burst
of load from other work on the machine hits every contender alike. One round is
one chunk of each, the order rotating; the result per contender is the median
over rounds of (hand's chunk time / the contender's): above 1 is faster than the
hand-written loop. Start-up, the final evaluation and the final figures are not
timed; the rnnzoo runs evaluate and checkpoint only at the end, so all contenders
do the same work in the timed chunks, probes and W&B logging included.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import machine, ratio_summary
from overhead_contender import SIZES, lightning_version

HERE = Path(__file__).resolve().parent
CONTENDERS = ("hand", "lightning", "rnnzoo", "rnnzoo-here", "rnnzoo-lean")


# -- the turns ----------------------------------------------------------------------------


class Contender:
    """A contender's process, between turns."""

    def __init__(
        self, name: str, size: str, steps: int, warmup: int, chunk: int, path: Path | None
    ) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        if path is not None:  # another checkout's rnnzoo and plugins come first
            env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")])
        script = str(HERE / "overhead_contender.py")
        command = [sys.executable, script, name.split("@")[0], size]
        command += [str(steps), str(warmup), str(chunk)]
        self.name = name
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=HERE
        )

    def report(self) -> str:
        """The next line the contender reports (``ready`` or a chunk's seconds)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("@@ "):
                return line[3:].strip()
        raise RuntimeError(f"{self.name} ended early (exit code {self.process.wait()})")

    def turn(self) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        return float(self.report())

    def finish(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        if self.process.wait() != 0:
            raise RuntimeError(f"{self.name} failed (exit code {self.process.returncode})")


def contenders(wanted: list[str], baseline: bool = False) -> list[str]:
    """``wanted`` with ``hand`` first, without Lightning where it is not installed,
    and with the ``@base`` twins of the rnnzoo contenders for a ``baseline``."""
    names = ["hand"] + [c for c in wanted if c != "hand"]
    names = [c for c in names if c != "lightning" or lightning_version() is not None]
    return names + [f"{n}@base" for n in names if baseline and n.startswith("rnnzoo")]


def importable(checkout: Path, into: Path) -> Path:
    """A folder whose ``rnnzoo`` and ``rnnzoo_plugins`` are ``checkout``'s."""
    (into / "rnnzoo").symlink_to(checkout.resolve() / "rnnzoo")
    (into / "rnnzoo_plugins").symlink_to(checkout.resolve() / "plugins")
    return into


def take_turns(
    size: str,
    names: list[str],
    rounds: int,
    chunk: int,
    warmup: int,
    log: Any,
    baseline: Path | None = None,
) -> dict[str, list[float]]:
    """One set of contender processes, ``rounds`` turns each: the chunk times."""
    steps = warmup + rounds * chunk
    contenders = [
        Contender(n, size, steps, warmup, chunk, baseline if n.endswith("@base") else None)
        for n in names
    ]
    try:
        for c in contenders:
            if c.report() != "ready":
                raise RuntimeError(f"{c.name} did not start")
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            turn = contenders[r % len(names) :] + contenders[: r % len(names)]
            for c in turn:
                times[c.name].append(c.turn())
            log(
                f"{size} round {r + 1}/{rounds}: "
                + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in names)
            )
        for c in contenders:
            c.finish()
    finally:
        for c in contenders:
            if c.process.poll() is None:
                c.process.kill()
    return times


def measure(
    size: str, names: list[str], sets: int, log: Any, **turns: Any
) -> list[dict[str, object]]:
    """The rows of ``size``: ``sets`` sets of processes in turn (a process can run a
    few percent faster or slower than another of the same code for its whole life,
    so each contender's ratio pools the rounds of several processes)."""
    per_set = []
    for number in range(sets):
        if sets > 1:
            log(f"{size}: set {number + 1}/{sets} of contender processes")
        per_set.append(take_turns(size, names, log=log, **turns))
    rounds, chunk = turns["rounds"], turns["chunk"]
    hidden, steps_t, batch = SIZES[size]
    rows = []
    for name in names:
        ratios = [
            [h / t for h, t in zip(times["hand"], times[name], strict=True)] for times in per_set
        ]
        median = statistics.median(t for times in per_set for t in times[name])
        rows.append(
            {
                "size": f"lstm-{hidden} T={steps_t} B={batch}",
                "contender": name,
                "rounds": rounds * sets,
                "chunk steps": chunk,
                "ms/step (median)": round(1000 * median / chunk, 3),
                **ratio_summary(ratios, "per set"),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["readme", "large"])
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--rounds", type=int, default=12, help="chunks per contender and set")
    parser.add_argument(
        "--sets", type=int, default=1, help="sets of contender processes, one after another"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=100,
        help="steps per chunk (the probe interval: one probe each)",
    )
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--baseline", type=Path, help="another rnnzoo checkout to time as rnnzoo@base too"
    )
    args = parser.parse_args()
    names = contenders(args.contenders, args.baseline is not None)
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:5.0f}s] {line}", flush=True)

    log(f"load average at start: {os.getloadavg()[0]:.2f}")
    conditions = {**machine(), "torch_threads": 1, "lightning": lightning_version()}
    conditions["baseline"] = revision(args.baseline) if args.baseline else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = importable(args.baseline, Path(tmp)) if args.baseline else None
        for size in args.sizes:
            turns = {"rounds": args.rounds, "chunk": args.chunk, "warmup": args.warmup}
            rows += measure(size, names, args.sets, log, baseline=base, **turns)
    log(f"load average at end: {os.getloadavg()[0]:.2f}")
    conditions["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    for row in rows:
        print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps({"machine": conditions, "rows": rows}, indent=1) + "\n")


def revision(checkout: Path) -> str:
    """The commit ``checkout`` is at (its folder name where git cannot tell)."""
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or checkout.name


if __name__ == "__main__":
    main()
