"""Gradient-flow probes: how much of the loss's gradient reaches each time step.

The lecture's argument, measured: the gradient of the loss at step T with respect
to the state at step t is a product of T - t Jacobians, and for tanh each carries a
factor g'(z) <= 1. A probe runs the model on a small batch with
``return_states=True``: the recurrence engine (:mod:`rnnzoo.recurrence`) then
skips the fused kernels and runs its generic step loop, which records every
step's state. It computes, by autograd on those per-step states:

* ``dL/dh_t`` for every step t (total derivative through the recurrence);
* ``dL_T/dh_t`` for the loss at one step T, against the distance T - t, summarised
  by its decay (slope of the natural log per step) and its reach (the distance at
  which it has fallen 10x and 1000x below its value at T);
* the mean activation derivative g'(z), and the fraction of units whose
  derivative is zero (dead ReLUs, saturated hardtanh);
* the bound on |g'(z)| that the activations in use declare
  (``Activation.derivative_range``), and whether it exceeds 1: whether the
  activation itself can make the gradient grow from step to step;
* the largest singular value of each recurrent weight matrix.

Here ``h_t`` stands for the whole state the cell passes to step t + 1: for an
LSTM both ``h_t`` and the cell ``c_t``, whose additive path is what carries the
gradient far. Norms are taken over the whole probe batch, all units and every
state component (the Frobenius norm of the gradient of the mean loss with respect
to ``[batch, components x hidden]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rnnzoo.activation import Activation
from rnnzoo.cell import State
from rnnzoo.errors import ConfigError
from rnnzoo.files import json_safe
from rnnzoo.head import summed_loss
from rnnzoo.model import RNNModel
from rnnzoo.recurrence import reverse_padded
from rnnzoo.task import Batch


@dataclass
class GradflowResult:
    """One probe, per ``key = "layer{l}/dir{d}"``.

    ``per_step[key]`` is ``||dL/dh_t||`` over time steps t (for the backward
    direction too, in time order); ``last_loss[key]`` is ``||dL_T/dh_t||`` for
    ``t = 0 .. T`` with ``T = loss_step``, forward directions only.
    """

    scalars: dict[str, float]
    per_step: dict[str, list[float]] = field(default_factory=dict)
    last_loss: dict[str, list[float]] = field(default_factory=dict)
    loss_step: int = -1


def reach(curve: list[float], factor: float) -> float:
    """Distance back from the loss step at which ``curve`` (indexed by time, loss
    step last) first drops ``factor`` times below its value at the loss step; the
    curve's length if it never does (the gradient reaches everything measured)."""
    values = curve[::-1]
    if not values or not values[0] > 0:
        return 0.0
    for distance, v in enumerate(values):
        if v <= values[0] / factor:
            return float(distance)
    return float(len(values))


def decay(curve: list[float]) -> float:
    """Least-squares slope of ``ln ||dL_T/dh_{T-d}||`` per step of distance d
    (0: the gradient keeps its size; -0.1: it shrinks by e^-0.1 per step).
    Zero and non-finite values are left out."""
    points = [(d, math.log(v)) for d, v in enumerate(curve[::-1]) if v > 0 and math.isfinite(v)]
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_d = sum(d for d, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((d - mean_d) ** 2 for d, _ in points)
    return sum((d - mean_d) * (y - mean_y) for d, y in points) / var


def sigma_max(model: RNNModel) -> dict[str, float]:
    """Largest singular value of each cell's recurrent weight matrices, keyed
    ``layer{l}/dir{d}/{name}`` (a gated cell's stacked gate matrix counts as one)."""
    keys, weights = [], []
    for index, cell in enumerate(model.cells()):
        layer, direction = divmod(index, model.recurrence.directions)
        for name, w in cell.recurrent_weights().items():
            keys.append(f"layer{layer}/dir{direction}/{name}")
            weights.append(torch.linalg.matrix_norm(w.detach().float(), ord=2))
    return dict(zip(keys, torch.stack(weights).tolist(), strict=True)) if weights else {}


def _loss_step(batch: Batch, loss_step: int, per_token: bool) -> int:
    """The time index of the loss whose gradient is followed back."""
    steps = batch.steps
    if not per_token:
        return steps - 1  # one loss per sequence, at its end
    t = loss_step if loss_step >= 0 else steps + loss_step
    if not 0 <= t < steps:
        raise ConfigError(
            f"'gradflow.loss_step' is {loss_step}, but the probe batch has {steps} steps. "
            f"Choose a step in [-{steps}, {steps - 1}] (-1: the last step)."
        )
    if batch.lengths is not None:
        t = min(t, int(batch.lengths.min()) - 1)
    return max(t, 0)


def _step_norms(
    grads: Sequence[Tensor | None], states: list[State], backward: bool, batch: Batch
) -> Tensor:
    """``||dL/ds_t||`` over the batch and every state component, for each step, in
    time order; ``grads`` holds one entry per component of every step's state."""
    components = iter(grads)
    per_step = []
    for state in states:
        parts = [next(components) for _ in state]
        per_step.append(
            torch.cat(
                [
                    torch.zeros_like(c) if g is None else g
                    for g, c in zip(parts, state, strict=True)
                ],
                -1,
            )
        )
    stacked = torch.stack(per_step, 1)
    if backward:  # processing order -> time order, within each sequence's length
        stacked = reverse_padded(stacked, batch.lengths)
    return torch.linalg.vector_norm(stacked.double(), dim=(0, 2))  # float32 squares underflow


def _activation_stats(records: list[tuple[Activation, list[Tensor]]]) -> dict[str, float]:
    """Mean g'(z) over every recorded pre-activation; the fraction with g'(z) = 0
    when an activation can die; the largest |g'(z)| that the declared
    ``derivative_range`` of the activations in use allows, and whether it exceeds
    1 (left out when one of them declares no range)."""
    sums, zeros, bounds, units = [], [], [], 0
    can_die = False
    for act, zs in records:
        if not zs:
            continue
        d = act.derivative(torch.cat([z.reshape(-1) for z in zs]).float())
        sums.append(d.sum())
        zeros.append((d == 0).sum().float())
        bounds.append(act.derivative_bound)
        units += d.numel()
        can_die = can_die or type(act).can_die
    if not units:
        return {}
    total, zero = torch.stack([torch.stack(sums).sum(), torch.stack(zeros).sum()]).tolist()
    stats = {"gradflow/act_deriv_mean": total / units}
    if can_die:
        stats["gradflow/act_zero_frac"] = zero / units
    bound = max(bounds)
    if math.isfinite(bound):
        stats["gradflow/act_deriv_bound"] = bound
        stats["gradflow/act_can_amplify"] = float(bound > 1)
    return stats


def probe(model: RNNModel, batch: Batch, loss_step: int = -1) -> GradflowResult:
    """Measure the gradient flow of ``model`` on ``batch`` (in eval mode, through
    the engine's generic step loop, which records every step's state: the model
    runs with ``return_states=True``, so no fused kernel; nothing is accumulated
    into the parameters' ``.grad``).

    ``loss_step`` picks the loss followed back in time for per-token heads (-1:
    the last step, capped at the shortest sequence); a sequence head's loss is at
    the end of the sequence.
    """
    per_token = model.head.spec.per_token
    t_loss = _loss_step(batch, loss_step, per_token)
    was_training = model.training
    model.eval()
    activations = [m for m in model.recurrence.modules() if isinstance(m, Activation)]
    for act in activations:
        act.recorded = []
    try:
        with torch.enable_grad():
            output = model(batch, return_states=True)
            assert output.step_states is not None
            states = [c for per_dir in output.step_states for s in per_dir for c in s]
            loss_sum, count = model.loss(output.predictions, batch)
            loss = loss_sum / count.clamp(min=1)
            total = torch.autograd.grad(loss, states, retain_graph=per_token, allow_unused=True)
            if per_token:
                keep = batch.mask()[:, t_loss]
                last_sum, last_count = summed_loss(
                    output.predictions[:, t_loss], batch.targets[:, t_loss], keep, model.head.spec
                )
                at_t = torch.autograd.grad(
                    last_sum / last_count.clamp(min=1), states, allow_unused=True
                )
            else:  # the only loss is at the end: dL/dh_t is dL_T/dh_t
                at_t = total
    finally:
        records = [(act, act.recorded or []) for act in activations]
        for act in activations:
            act.recorded = None
        model.train(was_training)

    directions = model.recurrence.directions
    keys, rows, offset = [], [], 0
    for index, per_dir in enumerate(output.step_states):
        direction = index % directions
        n = sum(len(state) for state in per_dir)
        keys.append(f"layer{index // directions}/dir{direction}")
        rows.append(_step_norms(total[offset : offset + n], per_dir, direction == 1, batch))
        if direction == 0:
            same = at_t is total
            rows.append(
                rows[-1] if same else _step_norms(at_t[offset : offset + n], per_dir, False, batch)
            )
        offset += n
    values = iter(torch.stack(rows).tolist())  # one device sync for every curve

    result = GradflowResult(scalars={}, loss_step=t_loss)
    for key in keys:
        result.per_step[key] = next(values)
        if key.endswith("/dir0"):
            curve = next(values)[: t_loss + 1]
            result.last_loss[key] = curve
            result.scalars[f"gradflow/reach10/{key}"] = reach(curve, 10)
            result.scalars[f"gradflow/reach1000/{key}"] = reach(curve, 1000)
            result.scalars[f"gradflow/decay/{key}"] = decay(curve)
    # the headline numbers: the first layer, whose gradient travels furthest
    for name in ("reach10", "reach1000", "decay"):
        result.scalars[f"gradflow/{name}"] = result.scalars[f"gradflow/{name}/layer0/dir0"]
    first = result.per_step["layer0/dir0"]
    result.scalars["gradflow/grad_h_first"] = first[0]
    result.scalars["gradflow/grad_h_last"] = first[-1]
    result.scalars.update(_activation_stats(records))
    sigmas = sigma_max(model)
    if sigmas:
        result.scalars["gradflow/sigma_max"] = max(sigmas.values())
        result.scalars.update({f"gradflow/sigma_max/{k}": v for k, v in sigmas.items()})
    return result


def parameter_grad_norms(model: torch.nn.Module, prefix: str) -> dict[str, float]:
    """``{prefix/<parameter name>: ||grad||}`` for every parameter with a gradient,
    and ``prefix/nonfinite``: how many gradient entries are NaN or Inf."""
    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return {}
    norms = [torch.linalg.vector_norm(g.detach().float()) for _, g in named]
    bad = sum((~torch.isfinite(g.detach())).sum() for _, g in named)
    values = torch.stack(
        [*norms, torch.as_tensor(bad, dtype=torch.float32, device=norms[0].device)]
    )
    *norm_values, nonfinite = values.tolist()  # one device sync
    out = {f"{prefix}/{name}": v for (name, _), v in zip(named, norm_values, strict=True)}
    out[f"{prefix}/nonfinite"] = nonfinite
    return out


def as_record(step: int, result: GradflowResult) -> dict[str, Any]:
    """The JSON line written to ``gradflow.jsonl`` for one probe: the scalars,
    ``grad_h`` (``||dL/dh_t||`` per key) and ``grad_h_last_loss`` (``||dL_T/dh_t||``)."""
    return json_safe(
        {
            "step": step,
            "loss_step": result.loss_step,
            **result.scalars,
            "grad_h": result.per_step,
            "grad_h_last_loss": result.last_loss,
        }
    )
