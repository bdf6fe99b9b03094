"""Framework overhead per training step: ``rnnzoo train`` against a hand-written
PyTorch loop and, when it is installed, PyTorch Lightning, on the same model.

    python benchmarks/overhead.py                 # README job and LSTM-256, 3 rounds
    python benchmarks/overhead.py --sizes readme --rounds 5 --steps 600

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
- ``rnnzoo-lean``: the same with ``gradflow.every=0`` and W&B disabled;
- ``rnnzoo@base`` and ``rnnzoo-lean@base`` with ``--baseline CHECKOUT``: the same
  two from another checkout of rnnzoo (an earlier revision), for before/after
  figures measured in the same turns.

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
from importlib import metadata
from pathlib import Path
from typing import Any

from bench_common import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: hidden, T, batch; ``tiny`` is for the test that keeps this script runnable
SIZES = {"readme": (64, 50, 64), "large": (256, 100, 64), "tiny": (8, 5, 4)}
CONTENDERS = ("hand", "lightning", "rnnzoo", "rnnzoo-lean")


def lightning_version() -> str | None:
    """The installed PyTorch Lightning's version, or None."""
    try:
        return metadata.version("lightning")
    except metadata.PackageNotFoundError:
        return None


# -- one contender, in its own process: trains a chunk of steps when told to ---------


class Turns:
    """The contender's side of the turns: after ``warmup`` steps, and after every
    ``chunk`` steps from then on, report the chunk's time and wait for the next
    word on stdin. ``tick()`` is called at the end of every step."""

    def __init__(self, warmup: int, chunk: int) -> None:
        self.warmup, self.chunk, self.done, self.started = warmup, chunk, 0, 0.0

    def tick(self) -> None:
        self.done += 1
        if self.done < self.warmup or (self.done - self.warmup) % self.chunk:
            return
        if self.done > self.warmup:
            print(f"@@ {time.perf_counter() - self.started}", flush=True)
        else:
            print("@@ ready", flush=True)
        sys.stdin.readline()  # the next turn
        self.started = time.perf_counter()


def train_hand(hidden: int, steps_t: int, batch: int, steps: int, turns: Turns) -> None:
    import torch
    from bench_training import HandWritten

    torch.manual_seed(0)
    hand = HandWritten(hidden, batch, steps_t, lr=0.003, max_norm=1.0)
    for _ in range(steps):
        hand.step()
        turns.tick()


def train_lightning(hidden: int, steps_t: int, batch: int, steps: int, turns: Turns) -> None:
    import lightning as L
    import torch
    import torch.nn.functional as F
    from bench_training import adding_batch
    from torch import nn

    class Adding(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return steps

        def __getitem__(self, index: int) -> Any:
            return adding_batch(index, batch, steps_t)

    class Model(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(2, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 1)

        def training_step(self, data: Any, index: int) -> Any:
            inputs, target = data
            out, _ = self.lstm(inputs)
            return F.mse_loss(self.head(out[:, -1]).squeeze(-1), target)

        def on_train_batch_end(self, outputs: Any, data: Any, index: int) -> None:
            turns.tick()

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=0.003)

    torch.manual_seed(0)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = torch.utils.data.DataLoader(Adding(), batch_size=None, shuffle=False)
    trainer.fit(Model(), loader)


def train_rnnzoo(
    hidden: int, steps_t: int, batch: int, steps: int, turns: Turns, lean: bool
) -> None:
    from rnnzoo import config, hookimpl
    from rnnzoo.plugins import plugin_manager
    from rnnzoo.registry import Registry
    from rnnzoo.training import Trainer

    class Clock:
        @hookimpl
        def rnnzoo_step_end(self) -> None:
            turns.tick()

    overrides = [
        f"task.length={steps_t}",
        f"model.hidden_size={hidden}",
        f"trainer.batch_size={batch}",
        f"trainer.steps={steps}",
        f"trainer.eval_every={steps}",
        f"trainer.checkpoint_every={steps}",
        "trainer.threads=1",
        "trainer.progress=false",
    ]
    overrides += (
        ["gradflow.every=0", "tracking.wandb_mode=disabled"]
        if lean
        else ["tracking.wandb_mode=offline"]
    )
    registry = Registry(plugin_manager())
    registry.pm.register(Clock())
    cfg = config.load(ROOT / "experiments" / "adding.yaml", overrides)
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(cfg, registry, Path(tmp) / "run").fit()


def contend(contender: str, size: str, steps: int, turns: Turns) -> None:
    import torch

    torch.set_num_threads(1)
    shape = SIZES[size]
    if contender == "hand":
        train_hand(*shape, steps, turns)
    elif contender == "lightning":
        train_lightning(*shape, steps, turns)
    else:
        train_rnnzoo(*shape, steps, turns, lean=contender == "rnnzoo-lean")


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
        command = [sys.executable, __file__, "--one", name.split("@")[0], "--sizes", size]
        command += ["--steps", str(steps), "--warmup", str(warmup), "--chunk", str(chunk)]
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


def measure(
    size: str,
    names: list[str],
    rounds: int,
    chunk: int,
    warmup: int,
    log: Any,
    baseline: Path | None = None,
) -> list[dict[str, object]]:
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
    hidden, steps_t, batch = SIZES[size]
    rows = []
    for name in names:
        per_round = [h / t for h, t in zip(times["hand"], times[name], strict=True)]
        median = statistics.median(times[name])
        rows.append(
            {
                "size": f"lstm-{hidden} T={steps_t} B={batch}",
                "contender": name,
                "rounds": rounds,
                "chunk steps": chunk,
                "ms/step (median)": round(1000 * median / chunk, 3),
                "x hand-written": round(statistics.median(per_round), 3),
                "x hand-written, quartiles": [
                    round(q, 3) for q in statistics.quantiles(per_round, n=4)
                ],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["readme", "large"])
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--rounds", type=int, default=12, help="chunks per contender")
    parser.add_argument(
        "--chunk",
        type=int,
        default=100,
        help="steps per chunk (the probe interval: one probe each)",
    )
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--baseline", type=Path, help="another rnnzoo checkout to time as rnnzoo@base too"
    )
    args = parser.parse_args()
    if args.one:
        contend(args.one, args.sizes[0], args.steps, Turns(args.warmup, args.chunk))
        return
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
            rows += measure(size, names, args.rounds, args.chunk, args.warmup, log, base)
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
