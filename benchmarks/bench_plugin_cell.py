"""A plugin cell through the generic step loop against its fused equivalent.

The cell is :class:`plugin_lstm.PluginLSTM` (LSTM maths, no fused kernel), the
fused equivalent ``nn.LSTM``. Contenders, each forward + backward of
``outputs.sum()``:

* ``step_loop``: the engine's :func:`rnnzoo.recurrence.step_loop` called directly;
* ``engine``: :class:`rnnzoo.recurrence.Recurrence` over the plugin cell (the step
  loop plus the engine's bookkeeping), as ``rnnzoo train`` runs it;
* ``reference loop``: :func:`rnnzoo.testing.reference_step_loop`, the naive loop
  that indexes ``projected[:, t]``;
* ``hand loop``: an ``nn.LSTMCell`` Python loop, for scale;
* with ``variants``: the step loop's maths writing into a preallocated output
  tensor, the step loop with a ``torch.jit.script``-ed step, and with a
  ``torch.compile``-d cell (its compile time is reported separately).

The reference loop's backward is quadratic in the sequence length, so it is left
out where ``steps`` is over 200.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_cells import INPUT, hand_loop, train_step
from bench_common import Fn, interleaved, median, mib, peak_memory, speed_ratio
from plugin_lstm import PluginLSTM
from torch import Tensor, nn

from rnnzoo.cell import State
from rnnzoo.recurrence import Recurrence, step_loop
from rnnzoo.testing import reference_step_loop

QUADRATIC_FROM = 200


def _step(x_t: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor):
    i, f, g, o = (x_t + F.linear(h, w_hh, b_hh)).chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


class ScriptedStep(nn.Module):
    """The plugin cell's step as one TorchScript function."""

    def __init__(self, cell: PluginLSTM) -> None:
        super().__init__()
        self.cell = cell
        self.hidden_size = cell.hidden_size
        self.step = torch.jit.script(_step)  # scripted here: only the variants run use it

    def project_input(self, x: Tensor) -> Tensor:
        return self.cell.project_input(x)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = self.step(x_t, state[0], state[1], self.cell.weight_hh, self.cell.bias_hh)
        return h, (h, c)


def loop(
    run: Callable[..., tuple[Tensor, State, list[Tensor]]], cell: nn.Module
) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        state = (x.new_zeros(x.shape[0], cell.hidden_size),) * 2  # type: ignore[arg-type]
        return run(cell, x, state, None, False)[0]

    return forward


def preallocated(cell: PluginLSTM) -> Callable[[Tensor], Tensor]:
    def forward(x: Tensor) -> Tensor:
        out = x.new_empty(x.shape[0], x.shape[1], cell.hidden_size)
        state: State = (x.new_zeros(x.shape[0], cell.hidden_size),) * 2
        for t, x_t in enumerate(cell.project_input(x).unbind(1)):
            out[:, t], state = cell(x_t, state)
        return out

    return forward


def run(
    batch: int,
    steps: int,
    hidden: int,
    rounds: int,
    min_time: float,
    device: torch.device,
    variants: bool,
    log: Callable[[str], None],
) -> dict[str, object]:
    torch.manual_seed(0)
    x = torch.randn(batch, steps, INPUT, device=device)
    cell = PluginLSTM(INPUT, hidden).to(device)
    engine = Recurrence(PluginLSTM, INPUT, hidden).to(device)
    engine.load_state_dict({f"cells.0.{k}": v for k, v in cell.state_dict().items()})
    reference = nn.LSTM(INPUT, hidden, batch_first=True).to(device)
    lstm_cell = nn.LSTMCell(INPUT, hidden).to(device)
    fns: dict[str, Fn] = {
        "torch.nn": train_step(reference, lambda v: reference(v)[0], x),
        "step_loop": train_step(cell, loop(step_loop, cell), x),
        "engine": train_step(engine, lambda v: engine(v).outputs, x),
        "hand loop": train_step(lstm_cell, hand_loop(lstm_cell, True), x),
    }
    if steps <= QUADRATIC_FROM:
        fns["reference loop"] = train_step(cell, loop(reference_step_loop, cell), x)
    result: dict[str, object] = {
        "device": device.type,
        "batch": batch,
        "steps": steps,
        "hidden": hidden,
    }
    if variants:
        fns["preallocated outputs"] = train_step(cell, preallocated(cell), x)
        fns["jit.script step"] = train_step(cell, loop(step_loop, ScriptedStep(cell)), x)
        compiled = torch.compile(cell, dynamic=False)
        fns["torch.compile step"] = train_step(cell, loop(step_loop, compiled), x)
        start = time.perf_counter()
        fns["torch.compile step"]()
        result["torch.compile step first call s"] = round(time.perf_counter() - start, 1)
    samples = interleaved(fns, rounds, min_time, device)
    tokens = batch * steps
    for name, fn in fns.items():
        result[f"{name} tok/s"] = round(tokens / median(samples[name]))
        result[f"{name} / torch.nn"] = round(speed_ratio(samples, name, "torch.nn"), 3)
        result[f"{name} peak MiB"] = mib(peak_memory(fn, device))
    log(
        f"{device.type} plugin lstm B={batch} T={steps} H={hidden}: "
        + ", ".join(f"{name} x{result[f'{name} / torch.nn']}" for name in fns)
    )
    return result
