"""Where a training step's bookkeeping went: each part of ``rnnzoo train``'s step
at the README's job size (LSTM-64, T = 50, batch 64, one thread), timed the way
it was done before and the way it is done now, interleaved in one process.

    python benchmarks/step_parts.py [--reps 300]

Parts: the settings read in every step (a DictConfig against a plain snapshot),
the loss (masked with an all-true mask against one fused reduction), the
optimizer step (Adam per parameter against fused), the fused LSTM kernel (through
``torch.func.functional_call`` against a template holding the cell's
parameters), and W&B logging (a row and a gradient-flow table, by W&B in the
training process against handing them to the W&B process). Each line: microseconds
per call before and now (medians) and what that is per training step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_common import machine
from torch import nn

from rnnzoo import config, wandb_support
from rnnzoo.head import summed_loss
from rnnzoo.task import TaskSpec
from rnnzoo.tracking import Tracker
from rnnzoo.training.settings import snapshot
from rnnzoo_plugins.activations import Tanh
from rnnzoo_plugins.cells.fused import WEIGHT_NAMES
from rnnzoo_plugins.cells.lstm import LSTMCell

ROOT = Path(__file__).resolve().parents[1]
HIDDEN, STEPS, BATCH = 64, 50, 64
#: the DictConfig keys the step loop read each step before (trainer.* and optim.*)
READS = [
    "steps",
    "grad_accum",
    "grad_accum",
    "batch_size",
    "max_time",
    "max_tokens",
    "eval_every",
    "log_every",
    "checkpoint_every",
    "steps",
    "on_nonfinite",
]
OPTIM_READS = ["lr", "warmup_steps", "schedule", "lr"]


def timed(calls: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds per call of each of ``calls``, called in turns."""
    samples: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(reps):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in samples.items()}


def settings_parts() -> dict[str, Callable[[], object]]:
    cfg = config.load(ROOT / "experiments" / "adding.yaml")
    snap = snapshot(cfg)

    def read(node: object) -> None:
        t, o = node.trainer, node.optim  # type: ignore[attr-defined]
        for key in READS:
            getattr(t, key)
        for key in OPTIM_READS:
            getattr(o, key)

    return {"before": lambda: read(cfg), "now": lambda: read(snap)}


def loss_parts() -> dict[str, Callable[[], object]]:
    spec = TaskSpec(input_kind="real", input_size=2, output_kind="real", output_size=1,
                    per_token=False)  # fmt: skip
    predictions = torch.randn(BATCH, 1, requires_grad=True)
    targets = torch.randn(BATCH)
    keep = torch.ones(BATCH, dtype=torch.bool)

    def run(mask: torch.Tensor | None) -> None:
        loss, _ = summed_loss(predictions, targets, mask, spec)
        loss.backward()

    return {"before": lambda: run(keep), "now": lambda: run(None)}


def optimizer_parts() -> dict[str, Callable[[], object]]:
    def make(fused: bool) -> Callable[[], object]:
        model = nn.Sequential(nn.LSTM(2, HIDDEN), nn.Linear(HIDDEN, 1))
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        return torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused).step

    return {"before": make(False), "now": make(True)}


def kernel_parts() -> dict[str, Callable[[], object]]:
    cell = LSTMCell(2, HIDDEN, Tanh())
    x = torch.randn(BATCH, STEPS, 2)
    state = (torch.zeros(BATCH, HIDDEN), torch.zeros(BATCH, HIDDEN))
    weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]

    def before() -> None:  # what the fused kernel did on every call
        params = dict(zip(WEIGHT_NAMES, weights, strict=True))
        h0 = tuple(s.unsqueeze(0).contiguous() for s in state)
        reference.train(torch.is_grad_enabled())
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="RNN module weights")
            out, _ = torch.func.functional_call(reference, params, (x, h0), tie_weights=False)
        out.sum().backward()

    def now() -> None:
        out, _ = cell.forward_sequence(x, state, None)
        out.sum().backward()

    reference = nn.LSTM(2, HIDDEN, batch_first=True, device="meta")
    return {"before": before, "now": now}


def wandb_parts(folder: Path) -> tuple[dict[str, Callable[[], object]], Tracker, Any]:
    import wandb

    tracker = Tracker(folder, run_id="parts", config={}, project="rnnzoo-bench", name="parts",
                      group=None, tags=[], wandb_mode="offline")  # fmt: skip
    rows = [[0, t, 50 - t, 1.0, 0.5, 0, 0, "lstm", "lstm"] for t in range(STEPS)]
    columns = ["step", "t", "distance", "a", "b", "layer", "direction", "cell", "curve"]
    (folder / "before").mkdir()
    run = wandb.init(dir=folder / "before", id="before", project="rnnzoo-bench",
                     mode="offline", settings=wandb.Settings(silent=True))  # fmt: skip
    step = iter(range(10**9))
    jsonl = open(folder / "before.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def row_before() -> None:  # what Tracker.log did: JSONL, then W&B on this thread
        n = next(step)
        jsonl.write(json.dumps({"step": n, "train/loss": 1.0}) + "\n")
        jsonl.flush()
        run.log({"train/loss": 1.0, "trainer/step": n})

    def table_before() -> None:
        import wandb

        data = [[wandb_support.cell(v) for v in row] for row in rows]
        run.log({"table": wandb.Table(columns=columns, data=data), "trainer/step": next(step)})

    return (
        {
            "row before": row_before,
            "row now": lambda: tracker.log(next(step), {"train/loss": 1.0}),
            "table before": table_before,
            "table now": lambda: tracker.log_table(next(step), "table", columns, rows),
        },
        tracker,
        run,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    torch.set_num_threads(1)
    print("| part | before µs | now µs | saved µs per step |")
    print("|---|---|---|---|")
    # per step: how many times the part runs (the W&B parts: logging every 25
    # steps, a probe's table every 100)
    for name, parts, per_step in [
        ("settings reads", settings_parts(), 1.0),
        ("loss (forward + backward)", loss_parts(), 1.0),
        ("Adam step", optimizer_parts(), 1.0),
        ("fused LSTM (forward + backward)", kernel_parts(), 1.0),
    ]:
        t = timed(parts, args.reps)
        before, now = 1e6 * t["before"], 1e6 * t["now"]
        rows.append(row(name, before, now, per_step))
    with tempfile.TemporaryDirectory() as tmp:
        parts, tracker, run = wandb_parts(Path(tmp))
        t = timed(parts, max(args.reps // 10, 5))
        tracker.close()
        run.finish()
    for kind, every in (("row", 25), ("table", 100)):
        before, now = 1e6 * t[f"{kind} before"], 1e6 * t[f"{kind} now"]
        rows.append(row(f"W&B {kind} (every {every} steps)", before, now, 1 / every))
    for r in rows:
        print(f"| {r['part']} | {r['before µs']} | {r['now µs']} | {r['saved µs per step']:+} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")


def row(part: str, before: float, now: float, per_step: float) -> dict[str, object]:
    """One part: microseconds per call before and now, and what that saves per step."""
    saved = round(per_step * (before - now), 1)
    return {"part": part, "before µs": round(before, 1), "now µs": round(now, 1),
            "saved µs per step": saved}  # fmt: skip


if __name__ == "__main__":
    main()
