"""The optimizer and its learning-rate schedule, from the ``optim`` section."""

from __future__ import annotations

import math
from typing import Any

import torch
from omegaconf import DictConfig


def make_optimizer(params: Any, cfg: DictConfig) -> torch.optim.Optimizer:
    """``optim.name`` with its settings; ``momentum`` applies to sgd and rmsprop.

    The name is one of the choices ``rnnzoo.config`` checked when it loaded. Adam
    and AdamW use torch's fused implementation (one kernel for all parameters
    instead of a handful of small operations per parameter: 160 µs a step against
    63 µs on the README's model, ``benchmarks/step_parts.py``) where this torch
    build has it for the parameters' device; SGD and RMSprop their ``foreach`` one
    (fused SGD refuses sparse gradients, and its gain is small)."""
    params = list(params)
    common = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.name in ("sgd", "rmsprop"):
        kind: Any = torch.optim.SGD if cfg.name == "sgd" else torch.optim.RMSprop
        return kind(params, momentum=cfg.momentum, foreach=True, **common)
    kind = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
    settings = {"betas": (cfg.beta1, cfg.beta2), **common}
    try:
        optimizer: torch.optim.Optimizer = kind(params, fused=True, **settings)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device here
        optimizer = kind(params, **settings)
    return optimizer


def lr_at(step: int, cfg: DictConfig, total_steps: int) -> float:
    """The learning rate of (0-based) ``step``: linear warmup from ``lr / warmup``
    to ``lr`` over ``warmup_steps``, then constant, or a linear or cosine decay
    that reaches ``lr * min_lr_ratio`` at ``total_steps``."""
    base = cfg.lr
    if step < cfg.warmup_steps:
        return base * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return base
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    progress = min(progress, 1.0)
    floor = base * cfg.min_lr_ratio
    if cfg.schedule == "linear":
        return floor + (base - floor) * (1 - progress)
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
