"""The whole training loop: ``rnnzoo train`` against a hand-written loop, and the
peak memory of truncated BPTT.

Throughput: the Trainer trains ``experiments/adding.yaml`` resized (LSTM-256,
T=100, batch 64, clip_norm 1.0, Adam, W&B offline, gradient-flow probes at the
default interval), and a hand-written PyTorch loop trains the same model
(``nn.LSTM`` + ``nn.Linear``) with the same optimizer, clipping and data
generation. The hand-written loop runs in chunks *between* the Trainer's steps
(from an ``rnnzoo_step_end`` hook, its time excluded from the Trainer's), so both
see the same machine load. Each chunk pair gives one ratio; the result is the
median. Chunks that hold a gradient-flow probe are compared separately: their
extra time, spread over the probe interval, is the probes' overhead.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_common import mib, peak_memory
from torch import Tensor, nn

from rnnzoo import config, hookimpl
from rnnzoo.events import TrainingRun
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"
CHUNK = 25  # steps; adding.yaml logs every 25 steps, so each chunk holds one log write


def adding_batch(index: int, batch: int, steps: int) -> tuple[Tensor, Tensor]:
    """The adding problem, written out by hand as a user would."""
    gen = torch.Generator().manual_seed(index)
    values = torch.rand(batch, steps, generator=gen)
    first = torch.randint(0, steps // 2, (batch,), generator=gen)
    second = torch.randint(steps // 2, steps, (batch,), generator=gen)
    markers = torch.zeros(batch, steps)
    rows = torch.arange(batch)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return torch.stack([values, markers], -1), values[rows, first] + values[rows, second]


class HandWritten:
    """``nn.LSTM`` + linear readout, Adam, global-norm clipping: the loop by hand."""

    def __init__(self, hidden: int, batch: int, steps: int, lr: float, max_norm: float) -> None:
        self.lstm = nn.LSTM(2, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)
        self.params = [*self.lstm.parameters(), *self.head.parameters()]
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.batch, self.steps, self.max_norm = batch, steps, max_norm
        self.index = 0

    def step(self) -> float:
        inputs, target = adding_batch(self.index, self.batch, self.steps)
        self.index += 1
        out, _ = self.lstm(inputs)
        loss = F.mse_loss(self.head(out[:, -1]).squeeze(-1), target)
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, self.max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()


class ChunkClock:
    """Times the Trainer's steps in chunks and runs ``side`` after each chunk."""

    def __init__(self, side: Callable[[], float]) -> None:
        self.side = side
        self.trainer_chunks: dict[int, float] = {}  # last step of the chunk -> seconds
        self.side_chunks: dict[int, float] = {}
        self.elapsed = 0.0
        self.last = 0.0

    @hookimpl
    def rnnzoo_train_start(self, run: TrainingRun) -> None:
        self.last = time.perf_counter()

    @hookimpl
    def rnnzoo_step_end(self, run: TrainingRun, step: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        self.elapsed += now - self.last
        if step % CHUNK == 0:
            self.trainer_chunks[step] = self.elapsed
            self.elapsed = 0.0
            self.side_chunks[step] = self.side()
        self.last = time.perf_counter()


def throughput(
    registry: Registry,
    chunks: int,
    hidden: int,
    batch: int,
    steps: int,
    log: Callable[[str], None],
    wandb_mode: str = "offline",
) -> dict[str, object]:
    overrides = [
        f"task.length={steps}",
        f"model.hidden_size={hidden}",
        f"trainer.batch_size={batch}",
        f"trainer.steps={CHUNK * (chunks + 1)}",
        f"trainer.eval_every={CHUNK * (chunks + 1)}",
        f"trainer.checkpoint_every={CHUNK * (chunks + 1)}",
        "trainer.progress=false",
        f"tracking.wandb_mode={wandb_mode}",
    ]
    cfg = config.load(ADDING, overrides)
    every = cfg.gradflow.every
    torch.manual_seed(0)
    hand = HandWritten(hidden, batch, steps, cfg.optim.lr, cfg.controllers.clip_norm.max_norm)

    def hand_chunk() -> float:
        start = time.perf_counter()
        for _ in range(CHUNK):
            hand.step()
        return time.perf_counter() - start

    clock = ChunkClock(hand_chunk)
    registry.pm.register(clock)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            Trainer(cfg, registry, Path(tmp) / "run").fit()
    finally:
        registry.pm.unregister(clock)
    ends = sorted(clock.trainer_chunks)[1:]  # the first chunk warms up
    probed = [e for e in ends if (e - CHUNK) % every == 0 and e > CHUNK]
    plain = [e for e in ends if e not in probed]
    ratio = statistics.median(clock.side_chunks[e] / clock.trainer_chunks[e] for e in plain)
    trainer_step = statistics.median(clock.trainer_chunks[e] for e in plain) / CHUNK
    hand_step = statistics.median(clock.side_chunks[e] for e in ends) / CHUNK
    result: dict[str, object] = {
        "model": f"lstm-{hidden}",
        "wandb": wandb_mode,
        "batch": batch,
        "steps": steps,
        "gradflow.every": every,
        "trainer tok/s": round(batch * steps / trainer_step),
        "hand-written tok/s": round(batch * steps / hand_step),
        "trainer / hand-written": round(ratio, 3),
        "chunks": len(plain),
    }
    if probed:
        extra = statistics.median(clock.trainer_chunks[e] - trainer_step * CHUNK for e in probed)
        overhead = extra / (every * trainer_step)
        result["probe s"] = round(extra, 3)
        result["probe overhead"] = round(overhead, 4)
        result["trainer+probes / hand-written"] = round(ratio / (1 + overhead), 3)
    log(
        f"rnnzoo train lstm-{hidden} B={batch} T={steps}: x{result['trainer / hand-written']} "
        f"hand-written, probes {result.get('probe overhead', 'n/a')}"
    )
    return result


def tbptt_memory(
    registry: Registry,
    lengths: list[int],
    hidden: int,
    batch: int,
    k: int,
    log: Callable[[str], None],
) -> list[dict[str, object]]:
    """Peak memory of one ``Trainer.forward_backward`` on the adding problem, with
    ``controllers.tbptt.k1=k2=k`` and, for comparison, without truncation."""
    rows = []
    variants = [(steps, True) for steps in lengths] + [(min(lengths), False)]
    for steps, truncated in variants:
        overrides = [
            f"task.length={steps}",
            f"model.hidden_size={hidden}",
            f"trainer.batch_size={batch}",
            "gradflow.every=0",
            "tracking.wandb_mode=disabled",
        ]
        if truncated:
            overrides += [f"controllers.tbptt.k1={k}", f"controllers.tbptt.k2={k}"]
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(config.load(ADDING, overrides), registry, Path(tmp) / "run")
            data = trainer.task.train_batch(0, batch).to(trainer.device)
            trainer.forward_backward(data)  # warm-up
            trainer.optimizer.zero_grad(set_to_none=True)
            start = time.perf_counter()
            peak = peak_memory(partial(trainer.forward_backward, data), trainer.device)
            seconds = time.perf_counter() - start
        rows.append(
            {
                "model": f"lstm-{hidden}",
                "batch": batch,
                "steps": steps,
                "tbptt k1=k2": k if truncated else None,
                "peak MiB": mib(peak),
                "seconds (profiled)": round(seconds, 2),
            }
        )
        log(f"tbptt={'k' + str(k) if truncated else 'off'} T={steps}: peak {mib(peak)} MiB")
    return rows
