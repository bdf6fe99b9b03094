"""Built-in cells against torch.nn: forward + backward tokens/s and peak memory.

For each cell (elman with tanh, lstm, gru) and size, three contenders run the same
layer (input 64, one layer, batch-first) on the same input, each forward plus a
backward of ``outputs.sum()`` with fresh parameter gradients:

* ``rnnzoo``: :class:`rnnzoo.recurrence.Recurrence` over the built-in cell, as
  ``rnnzoo train`` builds it (its fused kernel path);
* ``torch.nn``: ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``;
* ``hand loop``: a hand-written Python loop over ``nn.RNNCell`` / ``nn.LSTMCell`` /
  ``nn.GRUCell``, what one writes to get at every step's state.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import torch
from bench_common import Fn, interleaved, median, mib, peak_memory, speed_ratio
from torch import Tensor, nn

from rnnzoo.recurrence import Recurrence
from rnnzoo.registry import Registry

INPUT = 64
#: rnnzoo cell name -> (torch.nn module, torch.nn cell, extra arguments)
TORCH: dict[str, tuple[type[nn.Module], type[nn.Module], dict[str, str]]] = {
    "elman": (nn.RNN, nn.RNNCell, {"nonlinearity": "tanh"}),
    "lstm": (nn.LSTM, nn.LSTMCell, {}),
    "gru": (nn.GRU, nn.GRUCell, {}),
}
CONTENDERS = ("rnnzoo", "torch.nn", "hand loop")


def train_step(module: nn.Module, forward: Callable[[Tensor], Tensor], x: Tensor) -> Fn:
    params = list(module.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        forward(x).sum().backward()

    return step


def hand_loop(cell: nn.Module, lstm: bool) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        h = x.new_zeros(x.shape[0], cell.hidden_size)  # type: ignore[arg-type]
        c = h
        outputs = []
        for x_t in x.unbind(1):
            if lstm:
                h, c = cell(x_t, (h, c))
            else:
                h = cell(x_t, h)
            outputs.append(h)
        return torch.stack(outputs, 1)

    return forward


def contenders(
    registry: Registry, name: str, batch: int, steps: int, hidden: int, device: torch.device
) -> dict[str, Fn]:
    x = torch.randn(batch, steps, INPUT, device=device)
    factory = registry.get("cell", name).factory
    tanh = registry.get("activation", "tanh").factory

    rec = Recurrence(lambda i, h: factory(i, h, activation=tanh()), INPUT, hidden).to(device)
    module_cls, cell_cls, extra = TORCH[name]
    module = module_cls(INPUT, hidden, batch_first=True, **extra).to(device)
    cell = cell_cls(INPUT, hidden, **extra).to(device)
    return {
        "rnnzoo": train_step(rec, lambda v: rec(v).outputs, x),
        "torch.nn": train_step(module, lambda v: module(v)[0], x),
        "hand loop": train_step(cell, hand_loop(cell, name == "lstm"), x),
    }


def run(
    registry: Registry,
    grid: list[tuple[int, int, int]],
    rounds: int,
    min_time: float,
    device: torch.device,
    log: Callable[[str], None],
) -> list[dict[str, object]]:
    """One row per cell and ``(batch, steps, hidden)`` of ``grid``."""
    rows = []
    for name, (batch, steps, hidden) in product(TORCH, grid):
        torch.manual_seed(0)
        fns = contenders(registry, name, batch, steps, hidden, device)
        samples = interleaved(fns, rounds, min_time, device)
        tokens = batch * steps
        row: dict[str, object] = {
            "device": device.type,
            "cell": name,
            "batch": batch,
            "steps": steps,
            "hidden": hidden,
        }
        for contender in CONTENDERS:
            row[f"{contender} tok/s"] = round(tokens / median(samples[contender]))
            row[f"{contender} peak MiB"] = mib(peak_memory(fns[contender], device))
        row["rnnzoo / torch.nn"] = round(speed_ratio(samples, "rnnzoo", "torch.nn"), 3)
        row["rnnzoo / hand loop"] = round(speed_ratio(samples, "rnnzoo", "hand loop"), 3)
        rows.append(row)
        log(
            f"{device.type} {name:5s} B={batch:<3d} T={steps:<5d} H={hidden:<4d} "
            f"rnnzoo {row['rnnzoo tok/s']:>8} tok/s  x{row['rnnzoo / torch.nn']} torch.nn  "
            f"x{row['rnnzoo / hand loop']} hand loop"
        )
    return rows
