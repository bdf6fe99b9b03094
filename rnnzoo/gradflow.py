"""Gradient-flow probes: how much of the loss's gradient reaches each time step.

The lecture's argument, measured: the gradient of the loss at step T with respect
to the state at step t is a product of T - t Jacobians, and for tanh each carries a
factor g'(z) <= 1. A probe runs the reference step loop on a small batch and
computes, by autograd on the per-step states:

* ``dL/dh_t`` for every step t (total derivative through the recurrence);
* ``dL_T/dh_t`` for the loss at one step T, against the distance T - t, summarised
  by its decay (slope of the natural log per step) and its reach (the distance at
  which it has fallen 10x and 1000x below its value at T);
* the mean activation derivative g'(z), and the fraction of units whose
  derivative is zero (dead ReLUs, saturated hardtanh);
* the largest singular value of each recurrent weight matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rnnzoo.activation import Activation
from rnnzoo.head import summed_loss
from rnnzoo.model import RNNModel
from rnnzoo.task import Batch


@dataclass
class GradflowResult:
    """One probe. ``per_step[k]`` is ``||dL/dh_t||`` over t and ``last_loss[k]`` is
    ``||dL_T/dh_t||`` over t, for each ``k = "layer{l}/dir{d}"``."""

    scalars: dict[str, float]
    per_step: dict[str, list[float]] = field(default_factory=dict)
    last_loss: dict[str, list[float]] = field(default_factory=dict)
    loss_step: int = -1


def reach(curve: list[float], factor: float) -> float:
    """Distance back from the loss step at which ``curve`` (indexed by time, loss
    step last) first drops ``factor`` times below its value at the loss step; the
    full length if it never does."""
    values = curve[::-1]
    if not values or values[0] <= 0:
        return 0.0
    for distance, v in enumerate(values):
        if v <= values[0] / factor:
            return float(distance)
    return float(len(values))


def decay(curve: list[float]) -> float:
    """Least-squares slope of ``ln ||dL_T/dh_{T-d}||`` per step of distance d
    (0: the gradient keeps its size; -0.1: it shrinks by e^-0.1 per step)."""
    points = [(d, math.log(v)) for d, v in enumerate(curve[::-1]) if v > 0 and math.isfinite(v)]
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_d = sum(d for d, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((d - mean_d) ** 2 for d, _ in points)
    return sum((d - mean_d) * (y - mean_y) for d, y in points) / var


def _norms(grads: list[Tensor | None]) -> list[float]:
    return [0.0 if g is None else float(torch.linalg.vector_norm(g.float())) for g in grads]


def _activations(model: RNNModel) -> list[Activation]:
    return [m for m in model.recurrence.modules() if isinstance(m, Activation)]


def sigma_max(model: RNNModel) -> dict[str, float]:
    """Largest singular value of each cell's recurrent weight matrices."""
    out = {}
    for index, cell in enumerate(model.cells()):
        layer, direction = divmod(index, model.recurrence.directions)
        for name, w in cell.recurrent_weights().items():
            value = float(torch.linalg.matrix_norm(w.detach().float(), ord=2))
            out[f"layer{layer}/dir{direction}/{name}"] = value
    return out


def probe(model: RNNModel, batch: Batch, loss_step: int = -1) -> GradflowResult:
    """Measure the gradient flow of ``model`` on ``batch`` (nothing is accumulated
    into the parameters' ``.grad``)."""
    was_training = model.training
    model.eval()
    activations = _activations(model)
    for act in activations:
        act.recorded = []
    try:
        with torch.enable_grad():
            output = model(batch, return_states=True)
            assert output.step_states is not None
            loss_sum, count = model.loss(output.predictions, batch)
            loss = loss_sum / count.clamp(min=1)
            steps = batch.steps
            t_loss = loss_step if loss_step >= 0 else steps + loss_step
            if batch.lengths is not None:
                t_loss = min(t_loss, int(batch.lengths.min()) - 1)
            if model.head.spec.per_token:
                keep = batch.mask()[:, t_loss]
                last_sum, last_count = summed_loss(
                    output.predictions[:, t_loss], batch.targets[:, t_loss], keep, model.head.spec
                )
                last_loss = last_sum / last_count.clamp(min=1)
            else:
                last_loss = loss
            states = [h for per_dir in output.step_states for h in per_dir]
            total = torch.autograd.grad(loss, states, retain_graph=True, allow_unused=True)
            at_t = torch.autograd.grad(last_loss, states, allow_unused=True)
    finally:
        records = [(act, act.recorded or []) for act in activations]
        for act in activations:
            act.recorded = None
        model.train(was_training)

    result = GradflowResult(scalars={}, loss_step=t_loss)
    directions = model.recurrence.directions
    offset = 0
    reaches10, reaches1000, decays = [], [], []
    for index, per_dir in enumerate(output.step_states):
        layer, direction = divmod(index, directions)
        key = f"layer{layer}/dir{direction}"
        n = len(per_dir)
        result.per_step[key] = _norms(list(total[offset : offset + n]))
        curve = _norms(list(at_t[offset : offset + n]))[: t_loss + 1]
        offset += n
        result.last_loss[key] = curve
        if direction == 0:
            r10, r1000, dec = reach(curve, 10), reach(curve, 1000), decay(curve)
            result.scalars.update(
                {f"gradflow/reach10/{key}": r10, f"gradflow/reach1000/{key}": r1000,
                 f"gradflow/decay/{key}": dec}
            )
            reaches10.append(r10)
            reaches1000.append(r1000)
            decays.append(dec)
    # the first layer is the one whose gradient has to travel furthest
    result.scalars["gradflow/reach10"] = reaches10[0]
    result.scalars["gradflow/reach1000"] = reaches1000[0]
    result.scalars["gradflow/decay"] = decays[0]
    first = result.per_step["layer0/dir0"]
    result.scalars["gradflow/grad_h_first"] = first[0]
    result.scalars["gradflow/grad_h_last"] = first[-1]

    derivs, zeros, total_units = 0.0, 0.0, 0
    can_die = False
    for act, zs in records:
        for z in zs:
            d = act.derivative(z.float())
            derivs += float(d.sum())
            zeros += float((d == 0).sum())
            total_units += d.numel()
        can_die = can_die or (type(act).can_die and bool(zs))
    if total_units:
        result.scalars["gradflow/act_deriv_mean"] = derivs / total_units
        if can_die:
            result.scalars["gradflow/act_zero_frac"] = zeros / total_units
    sigmas = sigma_max(model)
    if sigmas:
        result.scalars["gradflow/sigma_max"] = max(sigmas.values())
        result.scalars.update({f"gradflow/sigma_max/{k}": v for k, v in sigmas.items()})
    return result


def parameter_grad_norms(model: torch.nn.Module, prefix: str) -> dict[str, float]:
    """``{prefix/<parameter name>: ||grad||}`` for every parameter with a gradient."""
    return {
        f"{prefix}/{name}": float(torch.linalg.vector_norm(p.grad.float()))
        for name, p in model.named_parameters()
        if p.grad is not None
    }


def as_record(step: int, result: GradflowResult) -> dict[str, Any]:
    """The JSON line written to ``gradflow.jsonl`` for one probe."""
    return {
        "step": step,
        "loss_step": result.loss_step,
        **result.scalars,
        "grad_h": result.per_step,
        "grad_h_last_loss": result.last_loss,
    }
