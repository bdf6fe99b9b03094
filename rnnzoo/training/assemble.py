"""What a trainer is built from: the device, the task, the model (wrapped for data
parallelism under ``torchrun``), the controllers, the optimizer, and the progress
of a resumed run."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch.nn.parallel import DistributedDataParallel

from rnnzoo.build import build_training, plugin_tags
from rnnzoo.controller import GradController
from rnnzoo.errors import CheckpointError
from rnnzoo.model import RNNModel
from rnnzoo.provenance import (
    changed_sources,
    component_sources,
    recorded_sources,
    require_components,
)
from rnnzoo.registry import Registry
from rnnzoo.task import Task
from rnnzoo.training import distributed
from rnnzoo.training.device import resolve_device
from rnnzoo.training.optim import make_optimizer
from rnnzoo.training.progress import say
from rnnzoo.training.run import RunFolder
from rnnzoo.training.state import TrainState, check_carried, restore_checkpoint


@dataclass
class Parts:
    device: torch.device
    task: Task
    model: RNNModel
    ddp: DistributedDataParallel | None
    controllers: list[tuple[str, GradController]]
    optimizer: torch.optim.Optimizer
    state: TrainState
    run_id: str
    tags: list[str]
    #: where each component came from (distribution and version, or plugin file)
    sources: dict[str, str]


def assemble(
    cfg: DictConfig,
    registry: Registry,
    folder: RunFolder,
    resume: bool,
    run_id: str | None,
    ranks: distributed.Ranks,
) -> Parts:
    """Build everything, seeded by ``trainer.seed``; with ``resume``, restore the
    latest checkpoint of ``folder`` (a run that ended before its first checkpoint
    starts again at step 0)."""
    device = resolve_device(distributed.device_name(ranks, cfg.trainer.device))
    if cfg.trainer.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    if resume:  # a component that is missing names the package it came from
        require_components(cfg, registry, recorded_sources(folder.path))
    sources = component_sources(cfg, registry)
    if resume and ranks.main:
        for line in changed_sources(recorded_sources(folder.path), sources):
            say(line)
    torch.manual_seed(cfg.trainer.seed)
    task, model, controllers = build_training(
        cfg, registry, device, folder.path if resume else None
    )
    optimizer = make_optimizer(model.parameters(), cfg.optim)
    state = TrainState()
    run_id = run_id or os.urandom(4).hex()
    if resume:
        stored = folder.read_run_id()
        run_id = stored or run_id
        try:
            latest = folder.latest_checkpoint()
        except CheckpointError:
            if ranks.main:
                say(f"'{folder.path}' has no checkpoint yet; the run starts again at step 0")
        else:
            state = restore_checkpoint(latest, model, optimizer, device, stored)
            check_carried(state, cfg.trainer.batch_size, folder.path)
            state.carried = distributed.my_rows(ranks, state.carried)
    # every rank starts from the same weights: DDP broadcasts rank 0's
    ddp = None
    if ranks.active:
        ddp = DistributedDataParallel(model)
        ddp.register_comm_hook(None, distributed.sum_gradients)
    tags = plugin_tags(cfg, registry)
    return Parts(device, task, model, ddp, controllers, optimizer, state, run_id, tags, sources)
