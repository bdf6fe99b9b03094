"""Evaluation on the validation data, the metric that decides "best", early stopping."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed
from omegaconf import DictConfig

from rnnzoo.errors import ConfigError
from rnnzoo.model import RNNModel
from rnnzoo.task import Task
from rnnzoo.training.distributed import SINGLE, Ranks, sum_all
from rnnzoo.training.state import TrainState
from rnnzoo.training.step import Autocast

#: metrics that are better when larger (early stopping and ``best/*``)
HIGHER_IS_BETTER = ("acc", "accuracy", "f1")


@torch.no_grad()
def evaluate(
    model: RNNModel,
    task: Task,
    batch_size: int,
    device: torch.device,
    max_batches: int | None = None,
    amp: Autocast = contextlib.nullcontext,
    ranks: Ranks = SINGLE,
) -> dict[str, float]:
    """``val/loss`` and the task's metrics on its validation data (a stream task's
    state runs on from batch to batch, as in training). Data-parallel ranks each
    evaluate their rows of every batch and add up their sums."""
    was_training = model.training
    model.eval()
    loss_sum, loss_count = 0.0, 0.0
    sums: dict[str, list[float]] = {}
    state = None
    try:
        for i, batch in enumerate(task.val_batches(batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            batch = ranks.shard(batch).to(device)
            if batch.batch_size == 0:
                continue
            with amp():
                out = model(batch, state if task.spec.stream else None)
                s, c = model.loss(out.predictions, batch)
            state = out.final_state
            loss_sum += float(s)
            loss_count += float(c)
            for key, (value, count) in task.metrics(out.predictions, batch).items():
                acc = sums.setdefault(key, [0.0, 0.0])
                acc[0] += value
                acc[1] += count
    finally:
        model.train(was_training)
    if ranks.active:
        loss_sum, loss_count, sums = _sum_over_ranks(ranks, loss_sum, loss_count, sums, device)
    result = {"val/loss": loss_sum / max(loss_count, 1.0)}
    result.update({f"val/{k}": v / max(c, 1.0) for k, (v, c) in sums.items()})
    return result


def _sum_over_ranks(
    ranks: Ranks,
    loss_sum: float,
    loss_count: float,
    sums: dict[str, list[float]],
    device: torch.device,
) -> tuple[float, float, dict[str, list[float]]]:
    seen: list[list[str]] = [[] for _ in range(ranks.world)]
    torch.distributed.all_gather_object(seen, sorted(sums))
    keys = sorted({k for part in seen for k in part})
    values = [loss_sum, loss_count] + [x for k in keys for x in sums.get(k, [0.0, 0.0])]
    total = sum_all(ranks, values, device)
    return total[0], total[1], {k: total[2 + 2 * i : 4 + 2 * i] for i, k in enumerate(keys)}


def main_metric(cfg: DictConfig, task: Task) -> tuple[str, str]:
    """The metric early stopping and ``best/*`` follow, and ``min`` or ``max``."""
    metric = cfg.trainer.early_stop_metric or task.main_metric
    key = metric if "/" in metric else f"val/{metric}"
    if key == f"val/{task.main_metric}":
        return key, task.main_metric_mode
    return key, "max" if key.endswith(HIGHER_IS_BETTER) else "min"


def is_better(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value < best if mode == "min" else value > best)


def track_best(state: TrainState, metrics: dict[str, float], cfg: DictConfig, task: Task) -> bool:
    """Follow the main metric's best value in ``state``; True when early stopping
    says stop (``trainer.early_stop_patience`` evaluations without improvement)."""
    key, mode = main_metric(cfg, task)
    value = check_metric(key, metrics)
    if is_better(value, state.best, mode):
        state.best, state.bad_evals = value, 0
        state.best_step = state.step if math.isfinite(value) else None
    else:
        state.bad_evals += 1
    patience = cfg.trainer.early_stop_patience
    stop = patience > 0 and state.bad_evals >= patience
    state.stopped = "early_stop" if stop else state.stopped
    return stop


def check_metric(key: str, metrics: dict[str, float]) -> float:
    """The value of the main metric ``key``, or a clear error when it is not logged."""
    if key not in metrics:
        raise ConfigError(
            f"Early-stopping metric '{key}' is not among the evaluation metrics "
            f"({', '.join(metrics)}). Set trainer.early_stop_metric to one of them."
        )
    return metrics[key]


def preflight(
    model: RNNModel, task: Task, cfg: DictConfig, device: torch.device, amp: Autocast
) -> None:
    """Before step 0, try what would otherwise fail late: read the first training
    batch and every validation batch (parsing and encoding all their data), and
    evaluate one validation batch, whose metrics must include the main metric."""
    t = cfg.trainer
    task.train_batch(0, t.batch_size)
    if sum(1 for _ in task.val_batches(t.batch_size)) == 0:  # reads all of it
        raise ConfigError(
            f"Task '{cfg.task.name}' has no validation data, so it cannot be evaluated. "
            "Point it at a validation set with at least one sequence (see: rnnzoo "
            f"describe {cfg.task.name})."
        )
    metrics = evaluate(model, task, t.batch_size, device, 1, amp)
    check_metric(main_metric(cfg, task)[0], metrics)
