"""The state-to-state product of a cell, its weight gradient formed once per block of steps.

Backpropagation through time sums a recurrent weight's gradient over the steps,
``dW = sum_t g_t^T h_{t-1}`` with ``g_t`` the gradient of the step's product. Autograd
forms it as one small matmul per step (``[out, B] x [B, in]``), each writing a whole
``[out, in]`` matrix to be added to the others: at small batch sizes that is slow
and bound by memory traffic. Inside the step loop (:func:`deferred_weight_grads`),
:func:`recurrent_linear` sends back only ``dL/dh_{t-1}`` at each step and keeps the
pair ``(h_{t-1}, g_t)``; the weight and bias gradients are formed from blocks of
:data:`BLOCK` steps, one large matmul per block, and reach the parameters when the
backward pass gets past the first step. A backward pass that does not reach the
weights (``autograd.grad`` of the states, as the gradient-flow probes take) or builds
a graph for double backward forms the gradients at once instead.

Outside the loop, and where a custom autograd function cannot go (no gradient
wanted, autocast, ``torch.func`` transforms, forward-mode AD, ``torch.compile``), it
is ``F.linear`` itself; the one exception is a step under ``torch.utils.checkpoint``,
whose recomputation runs outside the loop and must save what the loop saved.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import forward_ad

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


def _dynamo_compiling() -> bool:
    """``torch.compiler.is_compiling`` for torch < 2.3."""
    return bool(torch._dynamo.is_compiling())


#: torch.compile traces F.linear; the deferral lives in the eager step loop
_compiling: Callable[[], bool] = getattr(torch.compiler, "is_compiling", _dynamo_compiling)


def _plain_linear_wanted(tensors: tuple[Tensor, ...]) -> bool:
    """Whether only ``F.linear`` will do: nothing to differentiate, autocast, or a
    ``torch.func`` transform, forward-mode AD or ``torch.compile`` tracing, which
    custom functions would need extra rules for."""
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors):
        return True
    if _autocast_on(tensors[0].device) or forward_ad._current_level >= 0 or _compiling():
        return True
    return any(torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)


def _batched_by_dispatch_keys(tensor: Tensor) -> bool:
    """``is_legacy_batchedtensor`` for torch versions without it (may also say yes
    for functorch's batched tensors, which only costs the deferral)."""
    return "Batched" in str(torch._C._dispatch_keys(tensor)).split("(", 1)[1]


_is_legacy_batched: Callable[[Tensor], bool] = getattr(
    torch._C._functorch, "is_legacy_batchedtensor", _batched_by_dispatch_keys
)


def _batched(grad: Tensor) -> bool:
    """A batch of gradients (``is_grads_batched``, vmap), which cannot be kept."""
    return bool(torch._C._functorch.is_batchedtensor(grad) or _is_legacy_batched(grad))


def _saved_tensor_hooks_probe() -> Callable[[], bool]:
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    if top is None:
        return lambda: True  # cannot tell: assume a checkpoint may recompute the step
    try:
        top(True)
    except TypeError:  # torch versions whose function takes no argument
        return lambda: top() is not None
    return lambda: top(True) is not None


#: whether saved-tensor hooks are on, as a non-reentrant checkpoint sets them for its
#: region's forward and for the recomputation in backward, which must save the same
#: tensors: then the product is never F.linear (whose saved tensors differ)
_saved_tensor_hooks_on = _saved_tensor_hooks_probe()


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
        if h.dim() != 2:  # states of any rank: rows of features
            h, grad = h.reshape(-1, h.shape[-1]), grad.reshape(-1, grad.shape[-1])
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
    """``h W^T + b`` for one step. With ``pending``, backward returns dL/dh and
    defers dW, db when it can; without, it forms them at once.

    Both ways save the same tensors, so a step that ``torch.utils.checkpoint``
    recomputes outside the loop still matches what its backward expects."""

    @staticmethod
    def forward(ctx: Any, pending: _Pending | None, h: Tensor, *params: Tensor) -> Tensor:
        ctx.pending = pending
        # kept here: a checkpoint's recomputation saves the bare weight instead
        ctx.parameters_node = None if pending is None else params[0].grad_fn
        ctx.save_for_backward(h, params[0])
        return F.linear(h, *params)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        h, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad
        grad_h = grad @ weight if needs[1] else None
        if ctx.pending is not None and not torch.is_grad_enabled() and not _batched(grad):
            # (not while building a graph for double backward, nor for a batch of grads)
            if torch._C._will_engine_execute_node(ctx.parameters_node):
                ctx.pending.add(h.detach(), grad.detach())
            return (None, grad_h, None, None)[: len(needs)]
        rows = grad.reshape(-1, grad.shape[-1])
        grad_w = rows.t() @ h.reshape(-1, h.shape[-1]) if needs[2] else None
        grad_b = rows.sum(0) if needs[3:] == (True,) else None
        return (None, grad_h, grad_w, grad_b)[: len(needs)]


def recurrent_linear(h: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(h, weight, bias)`` for a cell's product of the previous state.

    Same result and gradients; inside the engine's step loop the gradient of
    ``weight`` and ``bias`` is accumulated over blocks of steps instead of one
    small matmul per step, which is faster for small batches.
    """
    params = (weight,) if bias is None else (weight, bias)
    if _plain_linear_wanted((h, *params)):
        return F.linear(h, weight, bias)
    scope = _SCOPE.get()
    if scope is None or not weight.requires_grad:
        if not _saved_tensor_hooks_on():  # nothing will recompute this product
            return F.linear(h, weight, bias)
        return _Step.apply(None, h, *params)
    key = (id(weight), id(bias))
    if key not in scope:
        pending = _Pending(bias is not None)
        scope[key] = pending, _Parameters.apply(pending, *params)
    pending, deferring = scope[key]
    return _Step.apply(pending, h, *deferring)


@contextlib.contextmanager
def deferred_weight_grads() -> Iterator[None]:
    """While open, :func:`recurrent_linear` defers its weight gradients (one forward
    pass over one sequence: open it around the time loop)."""
    token = _SCOPE.set({})
    try:
        yield
    finally:
        _SCOPE.reset(token)
