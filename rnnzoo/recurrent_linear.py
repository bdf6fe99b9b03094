"""The state-to-state product of a cell, its weight gradient formed once per block of steps.

Backpropagation through time sums a recurrent weight's gradient over the steps,
``dW = sum_t g_t^T h_{t-1}`` with ``g_t`` the gradient of the step's product. Autograd
forms it as one small matmul per step (``[out, B] x [B, in]``), each writing a whole
``[out, in]`` matrix to be added to the others: at small batch sizes that is slow
and bound by memory traffic. Inside the step loop (:func:`deferred_weight_grads`),
:func:`recurrent_linear` sends back only ``dL/dh_{t-1}`` at each step and keeps the
pair ``(h_{t-1}, g_t)``; the weight and bias gradients are formed from blocks of
:data:`BLOCK` steps, one large matmul per block, and reach the parameters when the
backward pass gets past the first step. Outside the loop, or where it cannot help
(no gradient wanted, autocast, a graph for double backward), it is ``F.linear``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: steps whose pairs are multiplied together in one matmul
BLOCK = 64

_ScopeKey = tuple[int, int]
_SCOPE: ContextVar[dict[_ScopeKey, tuple[_Pending, tuple[Tensor, ...]]] | None] = ContextVar(
    "rnnzoo_recurrent_scope", default=None
)


def _autocast_on(device: torch.device) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device.type))
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def _backward_pass() -> int:
    """The running backward pass (pairs of different passes over one graph never mix)."""
    return int(torch._C._current_graph_task_id())


class _Pending:
    """Per backward pass: the pairs not yet multiplied, and the running sums."""

    def __init__(self, has_bias: bool) -> None:
        self.has_bias = has_bias
        self.passes: dict[int, tuple[list[Tensor], list[Tensor], list[Tensor | None]]] = {}

    def add(self, h: Tensor, grad: Tensor) -> None:
        empty: list[Tensor | None] = [None, None] if self.has_bias else [None]
        hs, grads, sums = self.passes.setdefault(_backward_pass(), ([], [], empty))
        hs.append(h)
        grads.append(grad)
        if len(hs) >= BLOCK:
            self._multiply(hs, grads, sums)

    def _multiply(self, hs: list[Tensor], grads: list[Tensor], sums: list[Tensor | None]) -> None:
        g = torch.cat(grads)
        h = torch.cat(hs)
        weight = sums[0]
        sums[0] = g.t() @ h if weight is None else weight.addmm_(g.t(), h)
        if self.has_bias:
            bias = sums[1]
            sums[1] = g.sum(0) if bias is None else bias.add_(g.sum(0))
        hs.clear()
        grads.clear()

    def take(self) -> list[Tensor | None]:
        """The weight (and bias) gradients of this backward pass's steps, or Nones."""
        entry = self.passes.pop(_backward_pass(), None)
        if entry is None:
            return [None, None] if self.has_bias else [None]
        hs, grads, sums = entry
        if hs:
            self._multiply(hs, grads, sums)
        return sums


class _Parameters(torch.autograd.Function):
    """Identity on (weight[, bias]) whose backward delivers the deferred gradients.

    Every step's product takes its parameters from here, so autograd runs this
    backward only after every step's backward."""

    @staticmethod
    def forward(ctx: Any, pending: _Pending, *params: Tensor) -> tuple[Tensor, ...]:
        ctx.pending = pending
        ctx.set_materialize_grads(False)
        return tuple(p.view_as(p) for p in params)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        deferred = ctx.pending.take()
        out = [
            d if g is None else g if d is None else g + d
            for g, d in zip(grads, deferred, strict=True)
        ]
        return (None, *out)


class _Step(torch.autograd.Function):
    """``h W^T + b`` for one step; backward returns dL/dh and defers dW, db."""

    @staticmethod
    def forward(ctx: Any, pending: _Pending, h: Tensor, *params: Tensor) -> Tensor:
        ctx.pending = pending
        ctx.save_for_backward(h, params[0])
        return F.linear(h, *params)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        h, weight = ctx.saved_tensors
        grad_h = grad @ weight if ctx.needs_input_grad[1] else None
        bias = ctx.pending.has_bias
        if torch.is_grad_enabled():  # building a graph for double backward: no deferring
            return None, grad_h, grad.t() @ h, *((grad.sum(0),) if bias else ())
        ctx.pending.add(h.detach(), grad.detach())
        return None, grad_h, None, *((None,) if bias else ())


def recurrent_linear(h: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(h, weight, bias)`` for a cell's product of the previous state.

    Same result and gradients; inside the engine's step loop the gradient of
    ``weight`` and ``bias`` is accumulated over blocks of steps instead of one
    small matmul per step, which is faster for small batches.
    """
    scope = _SCOPE.get()
    if (
        scope is None
        or not torch.is_grad_enabled()
        or _autocast_on(h.device)
        or not (weight.requires_grad or (bias is not None and bias.requires_grad))
    ):
        return F.linear(h, weight, bias)
    key = (id(weight), id(bias))
    if key not in scope:
        pending = _Pending(bias is not None)
        inputs = (weight,) if bias is None else (weight, bias)
        scope[key] = pending, _Parameters.apply(pending, *inputs)
    pending, params = scope[key]
    return _Step.apply(pending, h, *params)


@contextlib.contextmanager
def deferred_weight_grads() -> Iterator[None]:
    """While open, :func:`recurrent_linear` defers its weight gradients (one forward
    pass over one sequence: open it around the time loop)."""
    token = _SCOPE.set({})
    try:
        yield
    finally:
        _SCOPE.reset(token)
