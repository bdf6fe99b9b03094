"""The hand-written training loop that ``benchmarks/overhead.py`` measures
``rnnzoo train`` against, and the peak memory of truncated BPTT."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_common import mib, peak_memory
from torch import Tensor, nn

from rnnzoo import config
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"


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
