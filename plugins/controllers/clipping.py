"""Gradient clipping: by global norm, by value, unit-wise adaptive, and per step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rnnzoo import GradController, hookimpl
from rnnzoo.controller import global_norm
from rnnzoo.errors import ConfigError


def _grads(model: nn.Module) -> list[Tensor]:
    return [p.grad for p in model.parameters() if p.grad is not None]


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
        grads = _grads(model)
        norm = global_norm(grads)
        clipped = norm > self.max_norm
        if clipped:
            scale = self.max_norm / (norm + 1e-6)
            torch._foreach_mul_(grads, scale)
        return {"norm_preclip": norm, "clipped": float(clipped)}


class ClipValue(GradController):
    """Clamp every gradient element to [-clip_value, clip_value]. Cheap, but it
    changes the gradient's direction."""

    def __init__(self, clip_value: float = 1.0) -> None:
        _positive("clip_value.clip_value", clip_value)
        self.clip_value = clip_value

    def after_backward(self, model: nn.Module) -> dict[str, float]:
        grads = _grads(model)
        norm = global_norm(grads)
        clipped = any(bool((g.abs() > self.clip_value).any()) for g in grads)
        for g in grads:
            g.clamp_(-self.clip_value, self.clip_value)
        return {"norm_preclip": norm, "clipped": float(clipped)}


def unitwise_norm(x: Tensor) -> Tensor:
    """Norm of each output unit (row) of a weight matrix; of the whole tensor for
    vectors and scalars."""
    if x.dim() <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())), keepdim=True)


class ClipAdaptive(GradController):
    """Adaptive gradient clipping, unit-wise (AGC; Brock et al. 2021): a unit's
    gradient is rescaled when its norm exceeds ``clipping`` times the norm of the
    unit's weights (at least ``eps``), so large weights may take large steps."""

    def __init__(self, clipping: float = 0.01, eps: float = 1e-3) -> None:
        _positive("clip_adaptive.clipping", clipping)
        _positive("clip_adaptive.eps", eps)
        self.clipping = clipping
        self.eps = eps

    def after_backward(self, model: nn.Module) -> dict[str, float]:
        params = [p for p in model.parameters() if p.grad is not None]
        norm = global_norm([p.grad for p in params])  # type: ignore[misc]
        clipped_units = 0.0
        units = 0
        for p in params:
            assert p.grad is not None
            max_norm = unitwise_norm(p.detach()).clamp(min=self.eps) * self.clipping
            grad_norm = unitwise_norm(p.grad)
            over = grad_norm > max_norm
            scale = torch.where(over, max_norm / grad_norm.clamp(min=1e-6), torch.ones_like(grad_norm))
            p.grad.mul_(scale)
            clipped_units += float(over.sum())
            units += over.numel()
        return {
            "norm_preclip": norm,
            "clipped": float(clipped_units > 0),
            "unit_clip_fraction": clipped_units / max(units, 1),
        }


class ClipState(GradController):
    """Clip dL/dh_t at every time step during backward, before it flows into
    step t-1 (Graves 2013 clips LSTM derivatives this way). ``mode='value'``
    clamps each element to [-max_value, max_value]; ``mode='norm'`` rescales each
    sequence's dL/dh_t to a norm of at most ``max_value``. Needs the per-step states,
    so the reference step loop runs instead of a fused kernel."""

    needs_step_states = True

    def __init__(self, max_value: float = 1.0, mode: Literal["value", "norm"] = "value") -> None:
        _positive("clip_state.max_value", max_value)
        self.max_value = max_value
        self.mode = mode
        self._seen = 0
        self._clipped = 0
        self._largest = 0.0

    def _clip(self, grad: Tensor) -> Tensor:
        self._seen += 1
        if self.mode == "value":
            largest = float(grad.abs().max()) if grad.numel() else 0.0
            clipped = grad.clamp(-self.max_value, self.max_value)
        else:
            norms = torch.linalg.vector_norm(grad, dim=-1, keepdim=True)
            largest = float(norms.max()) if grad.numel() else 0.0
            clipped = grad * (self.max_value / norms.clamp(min=self.max_value))
        self._largest = max(self._largest, largest)
        self._clipped += int(largest > self.max_value)
        return clipped

    def watch_states(self, states: Sequence[Tensor]) -> None:
        for h in states:
            if h.requires_grad:
                h.register_hook(self._clip)

    def after_backward(self, model: nn.Module) -> dict[str, float]:
        stats = {
            "norm_preclip": self._largest,
            "clipped": float(self._clipped > 0),
            "step_clip_fraction": self._clipped / max(self._seen, 1),
        }
        self._seen, self._clipped, self._largest = 0, 0, 0.0
        return stats


@hookimpl
def rnnzoo_grad_controllers() -> dict[str, Any]:
    return {
        "clip_norm": ClipNorm,
        "clip_value": ClipValue,
        "clip_adaptive": ClipAdaptive,
        "clip_state": ClipState,
    }
