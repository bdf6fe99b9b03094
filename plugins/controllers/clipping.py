"""Gradient clipping: by global norm, by value, unit-wise adaptive, and per step.

Each controller reports ``norm_preclip`` (the norm it saw before changing
anything) and ``clipped`` (1.0 when it changed the gradient). Controllers compose
in the order the config lists them, so a later one sees what an earlier one left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rnnzoo import GradController, hookimpl
from rnnzoo.controller import CLIPPED, global_norm
from rnnzoo.errors import ConfigError


def _params(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.grad is not None]


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"'controllers.{name}' must be positive, got {value}.")


class ClipNorm(GradController):
    """Rescale all gradients together when their global L2 norm exceeds
    ``max_norm`` (Pascanu, Mikolov & Bengio 2013): the direction is kept, the
    step length capped. The cure for the exploding gradient of ReLU RNNs."""

    def __init__(self, max_norm: float = 1.0) -> None:
        _positive("clip_norm.max_norm", max_norm)
        self.max_norm = max_norm

    def after_backward(self, model: nn.Module) -> dict[str, float]:
        params = _params(model)
        if not params:
            return {"norm_preclip": 0.0, CLIPPED: 0.0}
        # multiplies by min(1, max_norm / (norm + 1e-6)); returns the norm before
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_norm))
        return {"norm_preclip": norm, CLIPPED: float(norm > self.max_norm)}


class ClipValue(GradController):
    """Clamp every gradient element to [-clip_value, clip_value]. Cheap, but it
    changes the gradient's direction."""

    def __init__(self, clip_value: float = 1.0) -> None:
        _positive("clip_value.clip_value", clip_value)
        self.clip_value = clip_value

    def after_backward(self, model: nn.Module) -> dict[str, float]:
        params = _params(model)
        grads = [p.grad for p in params if p.grad is not None]
        norm = global_norm(grads)
        largest = max((float(g.abs().max()) for g in grads if g.numel()), default=0.0)
        torch.nn.utils.clip_grad_value_(params, self.clip_value)
        return {"norm_preclip": norm, CLIPPED: float(largest > self.clip_value)}


def unitwise_norm(x: Tensor) -> Tensor:
    """Norm of each output unit (row) of a weight matrix; of the whole tensor for
    vectors and scalars (as in Brock et al.'s and timm's AGC)."""
    if x.dim() <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())), keepdim=True)


class ClipAdaptive(GradController):
    """Adaptive gradient clipping, unit-wise (AGC; Brock et al. 2021): a unit's
    gradient G_i is rescaled to ``clipping * max(||W_i||, eps)`` when its norm
    exceeds that, so large weights may take large steps and small ones only small
    ones. A unit is a row of a weight matrix (one output unit; for an embedding,
    one token's vector) or a whole bias vector."""

    def __init__(self, clipping: float = 0.01, eps: float = 1e-3) -> None:
        _positive("clip_adaptive.clipping", clipping)
        _positive("clip_adaptive.eps", eps)
        self.clipping = clipping
        self.eps = eps

    def after_backward(self, model: nn.Module) -> dict[str, float]:
        params = _params(model)
        norm = global_norm([p.grad for p in params if p.grad is not None])
        counts, units = [], 0
        for p in params:
            assert p.grad is not None
            max_norm = unitwise_norm(p.detach()).clamp(min=self.eps) * self.clipping
            grad_norm = unitwise_norm(p.grad)
            over = grad_norm > max_norm
            scale = max_norm / grad_norm.clamp(min=1e-6)
            p.grad.mul_(torch.where(over, scale, torch.ones_like(scale)))
            counts.append(over.sum())
            units += over.numel()
        clipped = float(torch.stack(counts).sum()) if counts else 0.0
        return {
            "norm_preclip": norm,
            CLIPPED: float(clipped > 0),
            "unit_clip_fraction": clipped / max(units, 1),
        }


class ClipState(GradController):
    """Clip dL/dh_t at every time step during backward, before it flows into
    step t-1 (Graves 2013 clips LSTM derivatives this way). ``mode='value'``
    clamps each element to [-max_value, max_value]; ``mode='norm'`` rescales each
    sequence's dL/dh_t to a norm of at most ``max_value``. Each step sees the
    gradient arriving from later steps already clipped.

    ``norm_preclip`` is the largest per-sequence norm of a dL/dh_t before its
    clipping; ``step_clip_fraction`` the share of (layer, step) gradients changed.
    Needs the per-step states, so the model runs the generic step loop, which
    records every state, instead of a fused kernel."""

    needs_step_states = True

    def __init__(self, max_value: float = 1.0, mode: Literal["value", "norm"] = "value") -> None:
        _positive("clip_state.max_value", max_value)
        if mode not in ("value", "norm"):
            raise ConfigError(f"'controllers.clip_state.mode' is '{mode}'; choose value or norm.")
        self.max_value = max_value
        self.mode = mode
        self._reset()

    def _reset(self) -> None:
        # tensors, so that no hook waits for the device
        self._seen = 0
        self._clipped: Tensor | float = 0.0
        self._largest: Tensor | float = 0.0

    def _clip(self, grad: Tensor) -> Tensor:
        norms = torch.linalg.vector_norm(grad.float(), dim=-1)
        if self.mode == "value":
            over = (grad.abs() > self.max_value).any()
            clipped = grad.clamp(-self.max_value, self.max_value)
        else:
            over = (norms > self.max_value).any()
            factor = self.max_value / norms.clamp(min=self.max_value)
            clipped = grad * factor.unsqueeze(-1).to(grad.dtype)
        self._seen += 1
        self._clipped = self._clipped + over.float()
        largest = norms.max() if norms.numel() else norms.new_zeros(())
        self._largest = torch.maximum(torch.as_tensor(self._largest, device=grad.device), largest)
        return clipped

    def watch_states(self, states: Sequence[Tensor]) -> None:
        for h in states:
            if h.requires_grad:
                h.register_hook(self._clip)

    def after_backward(self, model: nn.Module) -> dict[str, float]:
        clipped = float(self._clipped)
        stats = {
            "norm_preclip": float(self._largest),
            CLIPPED: float(clipped > 0),
            "step_clip_fraction": clipped / max(self._seen, 1),
        }
        self._reset()
        return stats


@hookimpl
def rnnzoo_grad_controllers() -> dict[str, Any]:
    return {
        "clip_norm": ClipNorm,
        "clip_value": ClipValue,
        "clip_adaptive": ClipAdaptive,
        "clip_state": ClipState,
    }
