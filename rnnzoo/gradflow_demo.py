"""``rnnzoo gradflow``: the lecture's demonstration, for any registered cells.

For each configuration (``CELL`` or ``CELL:ACTIVATION``) and seed, a model is built
(and optionally trained for a few steps), one probe measures ``||dL_T/dh_t||`` on a
validation batch, and the curves, reach and decay go to ``gradflow.json`` and
``gradflow.png``.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rnnzoo import config, plots
from rnnzoo.build import build_controllers, build_experiment_model, build_task
from rnnzoo.errors import UsageError
from rnnzoo.gradflow import decay, probe, reach
from rnnzoo.model import RNNModel
from rnnzoo.registry import Registry
from rnnzoo.task import Task
from rnnzoo.training.device import resolve_device
from rnnzoo.training.optim import make_optimizer
from rnnzoo.training.step import forward_backward, shape_gradients

#: sequences in the batch each curve is measured on
PROBE_BATCH = 32


def parse_config(registry: Registry, spec: str) -> tuple[str, str | None]:
    """``"elman:relu"`` -> ``("elman", "relu")``, checked against the registry."""
    cell, _, activation = spec.partition(":")
    component = registry.get("cell", cell)
    if not activation:
        return cell, None
    registry.get("activation", activation)
    if not component.takes("activation"):
        raise UsageError(
            f"Cell '{cell}' takes no activation, so '{spec}' cannot be built. Write "
            f"'{cell}' alone (rnnzoo describe {cell} lists its parameters)."
        )
    return cell, activation


def experiment(
    registry: Registry,
    spec: str,
    *,
    length: int,
    hidden_size: int,
    seed: int,
    task: str,
    steps: int,
) -> DictConfig:
    """The experiment config of one configuration and seed."""
    cell, activation = parse_config(registry, spec)
    overrides = [
        f"task.name={task}",
        f"task.length={length}",
        f"model.cell={cell}",
        f"model.hidden_size={hidden_size}",
        f"trainer.seed={seed}",
        f"trainer.steps={max(steps, 1)}",
        f"trainer.eval_every={max(steps, 1)}",
        f"trainer.checkpoint_every={max(steps, 1)}",
        "trainer.progress=false",
        "gradflow.every=0",
        "tracking.wandb_mode=disabled",
    ]
    if activation:
        overrides.append(f"model.activation={activation}")
    cfg = config.load(None, overrides)
    if build_task(cfg, registry).spec.per_token:
        cfg.model.head = "per_token"
    return cfg


def curve_for(
    registry: Registry,
    spec: str,
    *,
    length: int,
    hidden_size: int,
    seed: int,
    task: str,
    steps: int,
) -> list[float]:
    """``||dL_T/dh_t||`` over t (first layer) for one configuration and seed, at
    initialisation or after ``steps`` training steps."""
    cfg = experiment(
        registry, spec, length=length, hidden_size=hidden_size, seed=seed, task=task, steps=steps
    )
    torch.manual_seed(seed)
    task_obj = build_task(cfg, registry)
    model = build_experiment_model(cfg, task_obj, registry)
    model.to(resolve_device(cfg.trainer.device))
    if steps > 0:
        train_briefly(model, task_obj, cfg, registry, steps)
    batch = next(iter(task_obj.val_batches(PROBE_BATCH)))
    device = next(model.parameters()).device
    return probe(model, batch.to(device)).last_loss["layer0/dir0"]


def train_briefly(
    model: RNNModel, task: Task, cfg: DictConfig, registry: Registry, steps: int
) -> None:
    """``steps`` training steps with the experiment's optimizer and controllers,
    through the trainer's own step functions, with no run folder."""
    controllers = build_controllers(cfg, registry)
    optimizer = make_optimizer(model.parameters(), cfg.optim)
    device = next(model.parameters()).device
    carried = None
    model.train()
    for step in range(steps):
        batch = task.train_batch(step, cfg.trainer.batch_size).to(device)
        _, final = forward_backward(model, batch, controllers, carried)
        carried = final if task.spec.stream else None
        shape_gradients(model, controllers, {})
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def geometric_mean(curves: list[list[float]]) -> list[float]:
    """Pointwise geometric mean (0 where any curve is 0)."""
    out = []
    for values in zip(*curves, strict=True):
        logs = [math.log(v) for v in values if v > 0]
        out.append(math.exp(sum(logs) / len(logs)) if len(logs) == len(values) else 0.0)
    return out


def run_demo(
    registry: Registry,
    configs: list[str],
    *,
    length: int = 100,
    hidden_size: int = 64,
    seeds: int = 3,
    task: str = "adding",
    train_steps: int = 0,
    out_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Measure each configuration over ``seeds`` seeds; write ``gradflow.json`` and
    ``gradflow.png`` to ``out_dir``. Per configuration: ``reach10``, ``reach1000``
    and ``decay`` (means over seeds), ``curve`` (geometric mean of the seeds'
    ``||dL_T/dh_t||``, loss step last) and ``per_seed`` (each seed's numbers)."""
    if not configs:
        raise UsageError("No configuration given: pass --configs CELL[:ACTIVATION],...")
    if length < 2 or hidden_size < 1 or seeds < 1 or train_steps < 0:
        raise UsageError(
            f"Got --length {length}, --hidden-size {hidden_size}, --seeds {seeds}, "
            f"--train-steps {train_steps}: the length must be at least 2, the hidden size "
            "and seeds at least 1, the training steps at least 0."
        )
    for spec in configs:
        parse_config(registry, spec)  # fail on a typo before measuring anything
    rows: dict[str, dict[str, Any]] = {}
    for spec in configs:
        per_seed: list[dict[str, Any]] = []
        for seed in range(seeds):
            curve = curve_for(
                registry,
                spec,
                length=length,
                hidden_size=hidden_size,
                seed=seed,
                task=task,
                steps=train_steps,
            )
            per_seed.append(
                {
                    "seed": seed,
                    "reach10": reach(curve, 10),
                    "reach1000": reach(curve, 1000),
                    "decay": decay(curve),
                    "curve": curve,
                }
            )
        rows[spec] = {
            **{
                k: statistics.fmean(s[k] for s in per_seed)
                for k in ("reach10", "reach1000", "decay")
            },
            "curve": geometric_mean([s["curve"] for s in per_seed]),
            "per_seed": per_seed,
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "length": length,
        "hidden_size": hidden_size,
        "seeds": seeds,
        "task": task,
        "train_steps": train_steps,
    }
    (out_dir / "gradflow.json").write_text(
        json.dumps({"settings": settings, "configs": rows}, indent=1)
    )
    when = "at initialisation" if train_steps == 0 else f"after {train_steps} training steps"
    plots.reach_figure(
        out_dir / "gradflow.png",
        {k: v["curve"] for k, v in rows.items()},
        f"gradient of the loss at step T reaching step t, {when}\n"
        f"({task}, length {length}, hidden size {hidden_size}, geometric mean of {seeds} seeds)",
    )
    return rows
