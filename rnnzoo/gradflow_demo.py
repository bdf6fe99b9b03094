"""``rnnzoo gradflow``: the lecture's demonstration, for any registered cells."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from rnnzoo import config, plots
from rnnzoo.build import build_experiment_model, build_task
from rnnzoo.gradflow import decay, probe, reach
from rnnzoo.registry import Registry

PROBE_BATCH = 32


def _overrides(spec: str, length: int, hidden: int, seed: int, task: str, steps: int) -> list[str]:
    cell, _, activation = spec.partition(":")
    out = [
        f"task.name={task}",
        f"task.length={length}",
        f"model.cell={cell}",
        f"model.hidden_size={hidden}",
        f"trainer.seed={seed}",
        f"trainer.steps={max(steps, 1)}",
        f"trainer.eval_every={max(steps, 1)}",
        f"trainer.checkpoint_every={max(steps, 1)}",
        "trainer.progress=false",
        "gradflow.every=0",
        "tracking.wandb_mode=disabled",
    ]
    if activation:
        out.append(f"model.activation={activation}")
    return out


def curve_for(registry: Registry, spec: str, length: int, hidden: int, seed: int, task: str, steps: int) -> list[float]:
    """``||dL_T/dh_t||`` over t for one configuration and seed (layer 0)."""
    cfg = config.load(None, _overrides(spec, length, hidden, seed, task, steps))
    if cfg.model.head == "sequence" and build_task(cfg, registry).spec.per_token:
        cfg.model.head = "per_token"
    if steps > 0:
        from rnnzoo.trainer import Trainer

        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(cfg, registry, Path(tmp))
            trainer.fit()
            model, task_obj = trainer.model, trainer.task
    else:
        torch.manual_seed(seed)
        task_obj = build_task(cfg, registry)
        model = build_experiment_model(cfg, task_obj, registry)
    batch = next(iter(task_obj.val_batches(PROBE_BATCH)))
    device = next(model.parameters()).device
    return probe(model, batch.to(device)).last_loss["layer0/dir0"]


def _geometric_mean(curves: list[list[float]]) -> list[float]:
    out = []
    for values in zip(*curves):
        logs = [math.log(v) for v in values if v > 0]
        out.append(math.exp(sum(logs) / len(logs)) if len(logs) == len(values) else 0.0)
    return out


def run_demo(
    registry: Registry,
    configs: list[str],
    *,
    length: int,
    hidden_size: int,
    seeds: int,
    task: str,
    train_steps: int,
    out_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Measure each configuration over ``seeds`` seeds; write gradflow.json/png."""
    rows: dict[str, dict[str, Any]] = {}
    for spec in configs:
        per_seed = [
            curve_for(registry, spec, length, hidden_size, s, task, train_steps) for s in range(seeds)
        ]
        curve = _geometric_mean(per_seed)
        rows[spec] = {
            "reach10": sum(reach(c, 10) for c in per_seed) / seeds,
            "reach1000": sum(reach(c, 1000) for c in per_seed) / seeds,
            "decay": sum(decay(c) for c in per_seed) / seeds,
            "curve": curve,
            "per_seed": per_seed,
        }
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"length": length, "hidden_size": hidden_size, "seeds": seeds, "task": task, "train_steps": train_steps}
    (out_dir / "gradflow.json").write_text(json.dumps({"settings": meta, "configs": rows}, indent=1))
    when = "at initialisation" if train_steps == 0 else f"after {train_steps} training steps"
    plots.reach_figure(
        out_dir / "gradflow.png",
        {k: v["curve"] for k, v in rows.items()},
        f"gradient of the loss at T={length} reaching step t, {when} ({task}, H={hidden_size})",
    )
    return rows
