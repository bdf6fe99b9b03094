"""One training step as functions: forward and backward over truncated-BPTT
windows, the gradient controllers, and what happens when a value is not finite."""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from rnnzoo.cell import State
from rnnzoo.controller import CLIPPED, GradController, global_norm, plans_windows
from rnnzoo.errors import TrainingError
from rnnzoo.model import ModelOutput, RNNModel
from rnnzoo.task import Batch
from rnnzoo.training.state import TrainState

Controllers = Sequence[tuple[str, GradController]]
Autocast = Callable[[], contextlib.AbstractContextManager[Any]]


def detach_state(state: list[State] | None) -> list[State] | None:
    return None if state is None else [tuple(t.detach() for t in s) for s in state]


def loss_items(batch: Batch, per_token: bool) -> int:
    """How many items the batch's summed loss adds up: tokens or sequences."""
    return batch.num_tokens() if per_token else batch.batch_size


def _watch(controllers: Controllers, states: list[list[State]] | None) -> None:
    if states is None:
        return
    flat = [s[0] for per_dir in states for s in per_dir]  # the hidden states h_t
    for _, controller in controllers:
        if controller.needs_step_states:
            controller.watch_states(flat)


def forward_backward(
    model: RNNModel,
    batch: Batch,
    controllers: Controllers,
    carried: list[State] | None = None,
    scale: float = 1.0,
    amp: Autocast = contextlib.nullcontext,
    items: int | None = None,
    ddp: DistributedDataParallel | None = None,
    sync: bool = True,
) -> tuple[float, list[State] | None]:
    """Forward and backward one batch, gradients summed into ``.grad``. Returns the
    summed loss and the final state, detached (what a stream task carries into its
    next batch, passed back as ``carried``).

    The loss is divided by its number of items (``items``: this batch's by default)
    and by ``scale`` (the number of micro-batches of a gradient-accumulation step).
    When a controller plans truncated-BPTT windows, each window backpropagates its
    share of that same loss through its own steps only.

    Data-parallel (``ddp`` wraps ``model``): ``batch`` is this rank's share of a
    global batch of ``items`` loss items. Forward passes go through ``ddp``, whose
    gradient sum over ranks then is the global batch's gradient; only the last
    forward pass of a call with ``sync`` synchronises, the others run under
    ``no_sync`` (micro-batches and windows accumulate locally first).
    """
    needs_states = any(c.needs_step_states for _, c in controllers)
    per_token = model.head.spec.per_token
    # the global batch's mean: DDP adds the ranks' gradients up (sum_gradients)
    total = max(items if items is not None else loss_items(batch, per_token), 1) * scale

    def run(part: Batch, state: list[State] | None, last: bool) -> ModelOutput:
        if ddp is None:
            return model(part, state, needs_states)
        with contextlib.nullcontext() if last and sync else ddp.no_sync():
            out: ModelOutput = ddp(part, state, needs_states)
            return out

    planner = next((c for _, c in controllers if plans_windows(c)), None)
    windows = planner.plan_windows(batch.steps) if planner is not None else None
    if windows is None:
        with amp():
            out = run(batch, carried, True)
            _watch(controllers, out.step_states)
            loss_sum, _ = model.loss(out.predictions, batch)
        (loss_sum / total).backward()
        return float(loss_sum.detach()), detach_state(out.final_state)

    starts = {w.start for w in windows}
    # the detached state entering each window start, computed on the way
    saved: dict[int, list[State] | None] = {0: carried}
    loss_value = 0.0
    state: list[State] | None = None
    for w in windows:
        state = saved[w.start]
        cuts = sorted({w.loss_start, w.stop} | {s for s in starts if w.start < s < w.stop})
        begin = w.start
        window_loss: Tensor | None = None
        with amp():
            for cut in cuts:
                if cut <= begin:
                    continue
                part = batch.window(begin, cut, per_token)
                out = run(part, state, w is windows[-1] and cut == cuts[-1])
                _watch(controllers, out.step_states)
                if begin >= w.loss_start:
                    part_sum, _ = model.loss(out.predictions, part)
                    window_loss = part_sum if window_loss is None else window_loss + part_sum
                state = out.final_state
                if cut in starts and cut not in saved:
                    saved[cut] = detach_state(state)
                begin = cut
        if window_loss is not None:
            (window_loss / total).backward()
            loss_value += float(window_loss.detach())
    return loss_value, detach_state(state)


def grad_norm(model: RNNModel) -> float:
    """The global L2 norm of every parameter's gradient."""
    return global_norm([p.grad for p in model.parameters() if p.grad is not None])


def nonfinite_name(model: RNNModel, loss: float, norm: float) -> str | None:
    """What is not finite: the loss, a parameter's gradient, or nothing (None)."""
    if math.isfinite(loss) and math.isfinite(norm):
        return None
    if not math.isfinite(loss):
        return "the loss"
    for name, p in model.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"the gradient of '{name}'"
    return "the gradient norm"


def shape_gradients(model: RNNModel, controllers: Controllers, metrics: dict[str, float]) -> float:
    """Let every controller shape the gradients, in order; their statistics go into
    ``metrics`` as ``controller/NAME/KEY``. Returns 1.0 when any clipped."""
    clipped = 0.0
    for name, controller in controllers:
        for key, value in controller.after_backward(model).items():
            metrics[f"controller/{name}/{key}"] = value
            if key == CLIPPED:
                clipped = max(clipped, value)
    return clipped


def skip_nonfinite(state: TrainState, what: str, t: Any) -> bool:
    """Count the step in ``state`` as not finite and apply ``trainer.on_nonfinite``;
    True when training must stop (the run has then diverged)."""
    state.note_nonfinite(state.step + 1, t.checkpoint_every)
    stop = nonfinite_policy(
        t.on_nonfinite, what, state.step + 1, state.nonfinite_run, t.max_nonfinite
    )
    state.stopped = "nonfinite" if stop else state.stopped
    return stop


def nonfinite_policy(policy: str, what: str, step: int, in_a_row: int, max_in_a_row: int) -> bool:
    """Apply ``trainer.on_nonfinite`` to a step whose ``what`` is not finite: raise,
    or skip it (say so on stderr). Returns True when training must stop."""
    message = f"step {step}: {what} is not finite (NaN or Inf)"
    if policy == "raise":
        raise TrainingError(
            f"Training stopped at {message}; trainer.on_nonfinite=raise. Lower "
            "optim.lr, add controllers.clip_norm, or set trainer.on_nonfinite=skip."
        )
    _say(f"{message}; the step was skipped")
    if policy == "stop":
        _say("stopping (trainer.on_nonfinite=stop); lower optim.lr or add controllers.clip_norm")
        return True
    if in_a_row >= max_in_a_row:
        _say(
            f"{in_a_row} non-finite steps in a row; stopping (raise trainer.max_nonfinite, "
            "lower optim.lr or add controllers.clip_norm)"
        )
        return True
    return False


def _say(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"rnnzoo: {text}", file=sys.stderr)
