"""Data-parallel throughput: 2 gloo processes (1 thread each) against 1 process (1
thread) on the character language model, LSTM-256, batch 64, T = 100.

    python benchmarks/data_parallel.py                 # 3 interleaved rounds
    python benchmarks/data_parallel.py --rounds 1 --steps 30

Each contender is a real ``rnnzoo train`` (``torchrun`` for two processes) on the
same experiment; its throughput is the median ``perf/tokens_per_s`` of the logged
windows after the first (start-up) window. The rounds alternate 1 process, 2
processes, ... so that a machine getting busier weighs on both alike. Prints a
Markdown table and writes it to ``benchmarks/results/data_parallel.md``.
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

HERE = Path(__file__).resolve().parent
EXPERIMENT = """
task: {name: char_lm, train: TEXT, bptt: 100}
model: {cell: lstm, head: lm, hidden_size: 256, input_dim: 64}
trainer: {steps: STEPS, batch_size: 64, log_every: 5, eval_every: 100000,
          checkpoint_every: 100000, progress: false}
gradflow: {every: 0}
tracking: {wandb_mode: disabled}
"""


def text_file(folder: Path) -> Path:
    shared = HERE.parents[1] / "shared" / "data" / "tinyshakespeare" / "input.txt"
    if shared.is_file():
        return shared
    path = folder / "text.txt"  # enough distinct text for 64 lanes of 100 characters
    words = [f"word{i % 997} of line {i}" for i in range(60000)]
    path.write_text("\n".join(words))
    return path


def run(procs: int, experiment: Path, folder: Path) -> float:
    """Median tokens/s of one training run on ``procs`` processes."""
    head = [sys.executable, "-m", "rnnzoo"]
    if procs > 1:
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={procs}", "-m", "rnnzoo"]  # fmt: skip
    out = folder / f"run-{procs}-{time.monotonic_ns()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    subprocess.run([*head, "train", str(experiment), "--run-dir", str(out)], check=True,
                   env=env, capture_output=True)  # fmt: skip
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    rates = [r["perf/tokens_per_s"] for r in rows if "perf/tokens_per_s" in r][1:]
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    load = [os.getloadavg()[0]]
    rates: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        experiment = folder / "lm.yaml"
        experiment.write_text(
            EXPERIMENT.replace("TEXT", str(text_file(folder))).replace("STEPS", str(args.steps))
        )
        for _ in range(args.rounds):
            for procs in (1, 2):
                rates[procs].append(run(procs, experiment, folder))
                print(f"{procs} process(es): {rates[procs][-1]:,.0f} tokens/s", flush=True)
    load.append(os.getloadavg()[0])
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    table = "\n".join(
        [
            "| char LM LSTM-256, B=64, T=100, 1 thread per process | tokens/s (median) | × 1 process |",
            "|---|---|---|",
            f"| 1 process | {one:,.0f} | 1.00 |",
            f"| 2 processes (gloo, DDP) | {two:,.0f} | {two / one:.2f} |",
            "",
            f"{args.rounds} interleaved rounds of {args.steps} steps; each round's values: "
            f"1 process {', '.join(f'{r:,.0f}' for r in rates[1])}; 2 processes "
            f"{', '.join(f'{r:,.0f}' for r in rates[2])}. Load average {load[0]:.1f} at "
            f"the start, {load[1]:.1f} at the end; {os.cpu_count()} CPUs.",
        ]
    )
    print(table)
    (HERE / "results" / "data_parallel.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
