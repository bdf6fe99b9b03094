"""The zoo, measured: every built-in cell at initialisation (gradient reach and
decay), after a small training budget (adding and copy memory, T = 100), and its
training throughput; and minGRU's scan at T = 2048 against nn.GRU and the step loop.

    OMP_NUM_THREADS=1 python benchmarks/zoo.py                  # everything
    OMP_NUM_THREADS=1 python benchmarks/zoo.py --parts speed,mingru --seeds 1

Results go to ``--out`` (JSON, written after every measurement: a run that stops
resumes where it was) and a Markdown table beside it. The machine is described in
the JSON (load average before and after), since shared machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import interleaved, machine  # noqa: E402

import rnnzoo  # noqa: E402
from rnnzoo.gradflow_demo import run_demo  # noqa: E402
from rnnzoo.plugins import plugin_manager  # noqa: E402
from rnnzoo.recurrence import Recurrence  # noqa: E402
from rnnzoo.registry import Registry  # noqa: E402
from rnnzoo.task import TaskSpec  # noqa: E402

CONFIGS = [
    "elman:tanh", "elman:relu", "irnn", "lstm", "gru", "peephole_lstm", "cifg_lstm",
    "ln_lstm", "indrnn:relu", "ugrnn", "exprnn", "antisymmetric_rnn", "cornn", "mingru",
    "minlstm",
]  # fmt: skip
#: the training budget of the task columns
BUDGET = {"length": 100, "hidden_size": 64, "batch_size": 64, "lr": 0.003, "clip": 1.0}


def model_overrides(spec: str) -> list[str]:
    cell, _, activation = spec.partition(":")
    return [f"model.cell={cell}"] + ([f"model.activation={activation}"] if activation else [])


def train(spec: str, task: str, seed: int, steps: int) -> dict[str, float]:
    """Final validation metrics of one short training run."""
    overrides = [
        f"task.name={task}", f"task.length={BUDGET['length']}", "task.val_size=500",
        f"model.hidden_size={BUDGET['hidden_size']}", f"optim.lr={BUDGET['lr']}",
        f"controllers.clip_norm.max_norm={BUDGET['clip']}", f"trainer.steps={steps}",
        f"trainer.eval_every={steps}", f"trainer.checkpoint_every={steps}",
        f"trainer.batch_size={BUDGET['batch_size']}", f"trainer.seed={seed}",
        "trainer.progress=false", "gradflow.every=0", "tracking.wandb_mode=disabled",
        *model_overrides(spec),
    ]  # fmt: skip
    if task == "copy_memory":
        overrides += ["model.head=per_token", "model.input_dim=16"]
    with tempfile.TemporaryDirectory() as tmp:
        summary = rnnzoo.train(None, overrides, run_dir=Path(tmp) / "run").summary
    return {k: v for k, v in summary.items() if isinstance(v, float)}


def throughput(registry: Registry, spec: str) -> float:
    """Training tokens/s (forward + backward) of the adding model, B 64, T 100, H 64."""
    cell, _, activation = spec.partition(":")
    model = rnnzoo.build_model(
        TaskSpec("features", 2, "regression", 1, per_token=False),
        cell=cell,
        activation=activation or "tanh",
        hidden_size=BUDGET["hidden_size"],
        registry=registry,
    )
    x = torch.rand(BUDGET["batch_size"], BUDGET["length"], 2)
    model.train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        model(x).predictions.sum().backward()

    seconds = interleaved({"step": step}, rounds=7, min_time=1.0, device=torch.device("cpu"))
    return x.shape[0] * x.shape[1] / statistics.median(seconds["step"])


def mingru_long(registry: Registry, steps: int = 2048, size: int = 256) -> dict[str, float]:
    """Forward + backward tokens/s at T = 2048, B = 16, H = 256 (input 256)."""
    factory = registry.get("cell", "mingru").factory
    batch = 16
    x = torch.randn(batch, steps, size)
    contenders: dict[str, nn.Module] = {
        "nn.GRU": nn.GRU(size, size, batch_first=True),
        "mingru scan": Recurrence(lambda i, h: factory(i, h, scan="always"), size, size),
        "mingru step loop": Recurrence(lambda i, h: factory(i, h, scan="never"), size, size),
    }

    def run(module: nn.Module) -> None:
        module.zero_grad(set_to_none=True)
        out = module(x)
        (out[0] if isinstance(out, tuple) else out.outputs).sum().backward()

    calls = {name: (lambda m=m: run(m)) for name, m in contenders.items()}
    seconds = interleaved(calls, rounds=5, min_time=2.0, device=torch.device("cpu"))
    return {name: batch * steps / statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="gradflow,adding,copy,speed,mingru")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600, help="adding: training steps per run")
    parser.add_argument("--copy-steps", type=int, default=300, help="copy memory: steps per run")
    parser.add_argument("--out", default="benchmarks/results/zoo.json")
    parser.add_argument("--length", type=int, default=BUDGET["length"], help="T of both tasks")
    parser.add_argument("--hidden-size", type=int, default=BUDGET["hidden_size"])
    parser.add_argument("--mingru-length", type=int, default=2048)
    parser.add_argument("--mingru-size", type=int, default=256)
    args = parser.parse_args()
    BUDGET.update(length=args.length, hidden_size=args.hidden_size)
    torch.set_num_threads(1)
    os.environ.setdefault("WANDB_SILENT", "true")
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault("machine", machine())
    data.setdefault(
        "budget",
        {**BUDGET, "steps": args.steps, "copy_steps": args.copy_steps, "seeds": args.seeds},
    )
    data.setdefault("load", []).append(os.getloadavg()[0])
    registry = Registry(plugin_manager())
    parts, configs = args.parts.split(","), args.configs.split(",")

    def save() -> None:
        data["load"].append(os.getloadavg()[0])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1))

    rows = data.setdefault("cells", {})
    for spec in configs:
        row = rows.setdefault(spec, {})
        started = time.perf_counter()
        if "gradflow" in parts and "reach10" not in row:
            with tempfile.TemporaryDirectory() as tmp:
                result = run_demo(
                    registry,
                    [spec],
                    length=BUDGET["length"],
                    hidden_size=BUDGET["hidden_size"],
                    seeds=args.seeds,
                    out_dir=Path(tmp),
                )[spec]
            row.update({k: result[k] for k in ("reach10", "reach1000", "decay")})
            save()
        for part, task, metric in (
            ("adding", "adding", "val/mse"),
            ("copy", "copy_memory", "val/loss"),
        ):
            if part in parts and part not in row:
                runs = [train(spec, task, seed, args.steps) for seed in range(args.seeds)]
                row[part] = [r[metric] for r in runs]
                row[f"{part}_baseline"] = runs[0][f"baseline/{metric.split('/')[1]}"]
                save()
        if "speed" in parts and "tokens_per_s" not in row:
            row["tokens_per_s"] = throughput(registry, spec)
            save()
        print(f"{spec}: {time.perf_counter() - started:.0f} s {row}", flush=True)
    if "mingru" in parts and "mingru_T2048" not in data:
        data["mingru_T2048"] = mingru_long(registry, args.mingru_length, args.mingru_size)
        data["mingru_settings"] = [args.mingru_length, args.mingru_size]
        save()
        print(data["mingru_T2048"], flush=True)
    out.with_suffix(".md").write_text(markdown(data))


def markdown(data: dict) -> str:
    def mean(values: list[float] | None) -> str:
        if not values:
            return "–"
        return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values):.3f}"

    b = data["budget"]
    lines = [
        f"Machine: {data['machine']}; load average {min(data['load']):.1f}–{max(data['load']):.1f}.",
        f"Gradient flow at initialisation: adding, T = {b['length']}, hidden {b['hidden_size']}, "
        f"{b['seeds']} seeds (means). Training: {b['steps']} steps (adding), "
        f"{b['copy_steps']} steps (copy memory), batch {b['batch_size']}, "
        f"hidden {b['hidden_size']}, Adam lr {b['lr']}, clip_norm {b['clip']}, T = "
        f"{b['length']}; mean ± std over {b['seeds']} seeds. Throughput: forward + backward "
        f"of the adding model, batch {b['batch_size']}, T {b['length']}, hidden "
        f"{b['hidden_size']}, 1 thread.",
        "",
        "| cell | reach10 | reach1000 | decay/step | adding MSE (baseline 0.167) "
        "| copy loss (baseline) | tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec, row in data.get("cells", {}).items():
        copy = mean(row.get("copy"))
        if "copy_baseline" in row:
            copy += f" ({row['copy_baseline']:.3f})"
        lines.append(
            f"| `{spec}` | {row.get('reach10', float('nan')):.1f} | "
            f"{row.get('reach1000', float('nan')):.1f} | {row.get('decay', float('nan')):.4f} | "
            f"{mean(row.get('adding'))} | {copy} | {row.get('tokens_per_s', float('nan')):,.0f} |"
        )
    if "mingru_T2048" in data:
        t, h = data["mingru_settings"]
        lines += ["", f"| T {t}, B 16, H {h}, forward + backward | tokens/s |", "|---|---|"]
        lines += [f"| {k} | {v:,.0f} |" for k, v in data["mingru_T2048"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
