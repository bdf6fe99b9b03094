"""One contender of ``benchmarks/overhead.py``, in its own process: trains the
adding problem's LSTM its own way and, in turns with the others, reports the time
of each chunk of steps.

    python benchmarks/overhead_contender.py CONTENDER SIZE STEPS WARMUP CHUNK

``CONTENDER`` is ``hand``, ``lightning``, ``rnnzoo``, ``rnnzoo-here`` or
``rnnzoo-lean`` (see ``overhead.py``); ``SIZE`` a key of :data:`SIZES`. After
``WARMUP`` steps it prints ``@@ ready`` and waits for a line on stdin; then, for
every ``CHUNK`` steps, it prints ``@@ SECONDS`` and waits for the next line.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: hidden, T, batch; ``tiny`` is for the test that keeps the benchmark runnable
SIZES = {"readme": (64, 50, 64), "large": (256, 100, 64), "tiny": (8, 5, 4)}


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


def lightning_version() -> str | None:
    """The installed PyTorch Lightning's version, or None."""
    try:
        return metadata.version("lightning")
    except metadata.PackageNotFoundError:
        return None


def train_hand(hidden: int, steps_t: int, batch: int, steps: int, turns: Turns) -> None:
    import torch
    from bench_training import HandWritten

    torch.manual_seed(0)
    hand = HandWritten(hidden, batch, steps_t, lr=0.003, max_norm=1.0)
    for _ in range(steps):
        hand.step()
        turns.tick()


def train_lightning(
    hidden: int, steps_t: int, batch: int, steps: int, tick: Callable[[], None]
) -> None:
    """Lightning's loop, calling ``tick`` at the end of every step."""
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
            tick()

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


#: the config overrides of each rnnzoo contender, on top of :func:`rnnzoo_overrides`
RNNZOO = {
    "rnnzoo": ["tracking.wandb_mode=offline"],
    "rnnzoo-here": ["tracking.wandb_mode=offline", "gradflow.process=never"],
    "rnnzoo-lean": ["gradflow.every=0", "tracking.wandb_mode=disabled"],
}


def rnnzoo_overrides(size: str, steps: int, contender: str) -> list[str]:
    """``experiments/adding.yaml`` at ``size`` for ``steps`` steps, one thread, no
    progress bar, evaluating and checkpointing at the end only, as ``contender``."""
    hidden, steps_t, batch = SIZES[size]
    return [
        f"task.length={steps_t}",
        f"model.hidden_size={hidden}",
        f"trainer.batch_size={batch}",
        f"trainer.steps={steps}",
        f"trainer.eval_every={steps}",
        f"trainer.checkpoint_every={steps}",
        "trainer.threads=1",
        "trainer.progress=false",
        *RNNZOO[contender],
    ]


def train_rnnzoo(
    size: str, steps: int, contender: str, tick: Callable[[Any], None], more: Sequence[str] = ()
) -> None:
    """``rnnzoo train`` as ``contender`` (with the config overrides ``more``), calling
    ``tick(run)`` at the end of every step, after every other plugin's end of it."""
    from rnnzoo import config, hookimpl
    from rnnzoo.plugins import plugin_manager
    from rnnzoo.registry import Registry
    from rnnzoo.training import Trainer

    class Clock:
        @hookimpl(trylast=True)
        def rnnzoo_step_end(self, run: Any) -> None:
            tick(run)

    registry = Registry(plugin_manager())
    registry.pm.register(Clock())
    overrides = [*rnnzoo_overrides(size, steps, contender), *more]
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
        train_lightning(*shape, steps, turns.tick)
    else:
        train_rnnzoo(size, steps, contender, lambda run: turns.tick())


if __name__ == "__main__":
    name, size, steps, warmup, chunk = sys.argv[1:6]
    contend(name, size, int(steps), Turns(int(warmup), int(chunk)))
