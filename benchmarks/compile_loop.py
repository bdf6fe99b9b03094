"""``model.compile`` against nn.LSTM and the eager step loop: steady speed and compile time.

    OMP_NUM_THREADS=1 python benchmarks/compile_loop.py           # every attempt
    OMP_NUM_THREADS=1 python benchmarks/compile_loop.py --quick   # K=16 at B=16 T=1000 only
    python benchmarks/compile_loop.py --device cuda                # on a GPU, against cuDNN

Every attempt runs at batch 16, T=1000 (the goal's size), K=16 also at batch 64, T=100.
The cell is the plugin LSTM of ``plugin_lstm.py`` (LSTM maths, no fused kernel), input
64, hidden 256, one layer; each timed call is a forward plus a backward of
``outputs.sum()`` with fresh parameter gradients, on one torch thread. Contenders,
timed interleaved in one process (``bench_common.interleaved``), ratios to ``nn.LSTM``
as medians of per-round ratios:

* ``torch.nn``: ``nn.LSTM`` (oneDNN's fused LSTM on the CPU);
* ``eager``: :class:`rnnzoo.recurrence.Recurrence`, the step loop (``model.compile=false``);
* ``compile K=k``: the same with ``compiled=CompiledLoop(k)`` (``model.compile=true
  model.compile_steps=k``): blocks of k steps compiled by inductor;
* ``compile K=16, weight grads per step`` (not with ``--quick``): K=16 with
  ``block_weight_grads=False``, the cell's weight gradients one product per step as
  autograd makes them, not one per block;
* ``compiled cell`` (not with ``--quick``; B=16 T=1000): the eager step loop calling
  ``torch.compile(cell, fullgraph=True, dynamic=False)`` at every step;
* ``diagnostic`` (not with ``--quick``; B=16 T=1000): K=16 on a plugin LSTM that
  takes no gradient for ``weight_hh`` (wrong gradients): what that gradient costs.

Compile time is measured apart from the steady speed: for each k, a fresh process with
an empty inductor cache (``TORCHINDUCTOR_CACHE_DIR`` a new temporary folder) times its
first forward + backward (cold), a second process with the same folder does it again
(warm); the compile time is that first call less a steady call. Results go to
``benchmarks/results/compile[-cuda][-quick].json`` and ``.md``. With ``--device cuda``
every contender runs on the GPU (``nn.LSTM`` is then cuDNN's) and the timing waits
for the GPU at the end of each sample.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_cells import INPUT, train_step
from bench_common import Fn, interleaved, machine, median, speed_ratio, timed
from plugin_lstm import PluginLSTM
from report import table
from torch import Tensor, nn

from rnnzoo.cell import State
from rnnzoo.compiled_loop import CompiledLoop
from rnnzoo.recurrence import Recurrence, step_loop

HERE = Path(__file__).resolve().parent
HIDDEN = 256


class NoRecurrentWeightGrad(PluginLSTM):
    """A diagnostic, not an option: the plugin LSTM with no gradient for weight_hh
    (its wrong gradients show what that gradient costs)."""

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        gates = x_t + F.linear(h, self.weight_hh.detach(), self.bias_hh)
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


def engine(
    compile_steps: int | None, device: torch.device, block_weight_grads: bool = True
) -> Recurrence:
    """The plugin LSTM through the engine, eager or compiled, same weights every time."""
    torch.manual_seed(0)
    compiled = None
    if compile_steps is not None:
        compiled = CompiledLoop(compile_steps, block_weight_grads=block_weight_grads)
    return Recurrence(PluginLSTM, INPUT, HIDDEN, compiled=compiled).to(device)


def contenders(
    batch: int, steps: int, ks: list[int], device: torch.device, full: bool
) -> dict[str, Fn]:
    """``full``: also the per-step weight gradients, the compiled cell and the
    diagnostic (the last two at T=1000 only)."""
    x = torch.randn(batch, steps, INPUT, device=device)
    reference = nn.LSTM(INPUT, HIDDEN, batch_first=True).to(device)
    fns: dict[str, Fn] = {"torch.nn": train_step(reference, lambda v: reference(v)[0], x)}
    for k in [None, *ks]:
        model = engine(k, device)
        name = "eager" if k is None else f"compile K={k}"
        fns[name] = train_step(model, lambda v, m=model: m(v).outputs, x)
    if full:
        model = engine(16, device, block_weight_grads=False)
        fns["compile K=16, weight grads per step"] = train_step(
            model, lambda v: model(v).outputs, x
        )
    if full and steps == 1000:
        cell = engine(None, device).cells[0]
        compiled = torch.compile(cell, fullgraph=True, dynamic=False)

        def per_step(v: Tensor) -> Tensor:
            state = (v.new_zeros(v.shape[0], HIDDEN),) * 2
            return step_loop(compiled, v, state, None, False)[0]  # type: ignore[arg-type]

        fns["compiled cell"] = train_step(cell, per_step, x)
        torch.manual_seed(0)
        diagnostic = Recurrence(NoRecurrentWeightGrad, INPUT, HIDDEN, compiled=CompiledLoop(16))
        diagnostic.to(device)
        fns["diagnostic: K=16, no weight_hh grad"] = train_step(
            diagnostic, lambda v: diagnostic(v).outputs, x
        )
    return fns


def steady(
    batch: int, steps: int, ks: list[int], device: torch.device, full: bool, rounds: int
) -> list[dict]:
    torch.compiler.reset()
    fns = contenders(batch, steps, ks, device, full)
    samples = interleaved(fns, rounds, 0.3, device)
    rows = []
    for name in fns:
        rows.append(
            {
                "B": batch,
                "T": steps,
                "contender": name,
                "tok/s": round(batch * steps / median(samples[name])),
                "x torch.nn": round(speed_ratio(samples, name, "torch.nn"), 3),
                "x torch.nn per round": [
                    round(b / s, 3) for s, b in zip(samples[name], samples["torch.nn"], strict=True)
                ],
            }
        )
    return rows


def first_call(batch: int, steps: int, k: int, device: torch.device) -> dict[str, float]:
    """In this process: the first forward + backward (compiling) and a steady one."""
    torch.set_num_threads(1)
    model = engine(k, device)
    x = torch.randn(batch, steps, INPUT, device=device)
    fn = train_step(model, lambda v: model(v).outputs, x)
    first = timed(fn, 1, device)
    times = [timed(fn, 1, device) for _ in range(3)]
    return {"first call s": round(first, 2), "compile s": round(first - median(times), 2)}


def compile_times(batch: int, steps: int, k: int, device: torch.device) -> dict[str, object]:
    """Cold and warm compile time of ``compile K=k``, each in a fresh process."""
    row: dict[str, object] = {"B": batch, "T": steps, "K": k}
    with tempfile.TemporaryDirectory(prefix="inductor-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": "1"}
        for kind in ("cold", "warm"):
            command = [sys.executable, __file__, "--device", str(device), "--first-call"]
            command += [str(batch), str(steps), str(k)]
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            row[f"{kind} compile s"] = result["compile s"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K=16 at B=16 T=1000 only")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")
    parser.add_argument("--first-call", nargs=3, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch build sees no CUDA device")
    if args.first_call:
        print(json.dumps(first_call(*args.first_call, device)))
        return
    torch.set_num_threads(1)
    ks = [16] if args.quick else [8, 16, 32]
    sizes = [(16, 1000)] if args.quick else [(16, 1000), (64, 100)]
    rounds = args.rounds or (3 if args.quick else 7)
    started = time.perf_counter()
    results: dict[str, object] = {"machine": machine(), "quick": args.quick, "rounds": rounds}
    results["compile"] = [compile_times(16, 1000, k, device) for k in ks]
    print(f"[{time.perf_counter() - started:5.0f}s] compile times: {results['compile']}")
    # every attempt at B=16 T=1000, the goal's size; at B=64 T=100 the default K only
    results["steady"] = [
        row
        for b, t in sizes
        for row in steady(b, t, ks if t == 1000 else [16], device, not args.quick, rounds)
    ]
    results["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    results["seconds"] = round(time.perf_counter() - started)
    stem = args.out / ("compile" + "-cuda" * (device.type == "cuda") + "-quick" * args.quick)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    m = results["machine"]
    text = (
        f"# model.compile (benchmarks/compile_loop.py{' --quick' if args.quick else ''})\n\n"
        f"{m['cuda_device'] + ' (CUDA), ' if device.type == 'cuda' else ''}"
        f"{m['cpu']}, {m['cpu_count']} cores, 1 torch thread, torch {m['torch']}; load "
        f"average {m['load_average_1min']} at the start, {results['load_average_1min_end']} "
        f"at the end; {rounds} interleaved rounds; {results['seconds']} s in all.\n\n"
        "## Steady state, forward + backward, plugin LSTM H=256\n\n"
        + table(results["steady"])  # type: ignore[arg-type]
        + "\n## Compile time (first call less a steady call), B=16 T=1000\n\n"
        + table(results["compile"])  # type: ignore[arg-type]
    )
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
