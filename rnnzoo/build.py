"""Put the chosen plugins together: task, model and gradient controllers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rnnzoo.controller import GradController, plans_windows
from rnnzoo.errors import ConfigError
from rnnzoo.model import RNNModel, build_model
from rnnzoo.registry import Registry
from rnnzoo.task import Task


def _section(cfg: DictConfig, key: str) -> dict[str, Any]:
    node = OmegaConf.select(cfg, key)
    if node is None:
        return {}
    data = OmegaConf.to_container(node, resolve=True)
    if not isinstance(data, dict):
        raise ConfigError(f"'{key}' must be a mapping, got {data!r}.")
    return {str(k): v for k, v in data.items()}


def _task_args(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """The task's name and its settings (every other key of the ``task`` section)."""
    args = _section(cfg, "task")
    name = args.pop("name", None)
    if not name:
        raise ConfigError("The config names no task: set 'task.name' (see: rnnzoo list tasks).")
    return str(name), args


def build_task(cfg: DictConfig, registry: Registry) -> Task:
    name, args = _task_args(cfg)
    task = registry.get("task", name).build(args, "task", seed=cfg.trainer.seed)
    if not isinstance(task, Task):
        raise ConfigError(f"Task '{name}' built {type(task).__name__}, not an rnnzoo.Task.")
    return task


def build_controllers(cfg: DictConfig, registry: Registry) -> list[tuple[str, GradController]]:
    out = []
    for name, args in _section(cfg, "controllers").items():
        if args is None:  # `controllers.clip_norm=null` switches one off
            continue
        if not isinstance(args, dict):
            raise ConfigError(
                f"'controllers.{name}' must be a mapping of parameters (or {{}} for the "
                f"defaults), got {args!r}."
            )
        controller = registry.get("controller", name).build(args, f"controllers.{name}")
        out.append((name, controller))
    planners = [n for n, c in out if plans_windows(c)]
    if len(planners) > 1:
        raise ConfigError(
            f"Controllers {', '.join(planners)} all cut the sequence into windows; keep one."
        )
    return out


def build_experiment_model(cfg: DictConfig, task: Task, registry: Registry) -> RNNModel:
    model_cfg = _section(cfg, "model")
    input_dim = model_cfg.get("input_dim")
    if input_dim is not None and input_dim < 1:
        raise ConfigError(f"'model.input_dim' must be at least 1 or null, got {input_dim}.")
    adapter = task.input_adapter(input_dim)
    return build_model(task.spec, **model_cfg, adapter=adapter, registry=registry)


def build_training(
    cfg: DictConfig, registry: Registry, device: torch.device, saved: Path | None = None
) -> tuple[Task, RNNModel, list[tuple[str, GradController]]]:
    """The task (with its saved files from the run folder ``saved``, when resuming),
    the model on ``device`` and the gradient controllers of an experiment."""
    task = build_task(cfg, registry)
    if saved is not None:
        task.load(saved)
    model = build_experiment_model(cfg, task, registry).to(device)
    controllers = build_controllers(cfg, registry)
    if model.recurrence.directions == 2 and any(plans_windows(c) for _, c in controllers):
        raise ConfigError(
            "Truncated BPTT cannot train a bidirectional model: the backward "
            "direction needs the whole sequence. Remove 'controllers.tbptt' or use a "
            "one-directional head."
        )
    return task, model, controllers


def plugin_tags(cfg: DictConfig, registry: Registry) -> list[str]:
    """``cell:lstm``, ``activation:tanh``, ``controller:clip_norm``, ... for W&B."""
    tags = [f"task:{cfg.task.name}", f"cell:{cfg.model.cell}", f"head:{cfg.model.head}"]
    if registry.get("cell", cfg.model.cell).takes("activation"):
        tags.append(f"activation:{cfg.model.activation}")
    tags += [
        f"controller:{name}"
        for name, args in _section(cfg, "controllers").items()
        if args is not None
    ]
    return tags + list(cfg.tracking.tags)


def validate(cfg: DictConfig, registry: Registry) -> None:
    """Check every plugin name and parameter in ``cfg`` without building anything."""
    task_name, task_args = _task_args(cfg)
    registry.get("task", task_name).check_args(task_args, "task")
    m = cfg.model
    registry.get("cell", m.cell).check_args(_section(cfg, "model.cell_args"), "model.cell_args")
    registry.get("activation", m.activation).check_args(
        _section(cfg, "model.activation_args"), "model.activation_args"
    )
    registry.get("head", m.head).check_args(_section(cfg, "model.head_args"), "model.head_args")
    build_controllers(cfg, registry)
