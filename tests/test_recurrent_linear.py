"""recurrent_linear against F.linear: values, first and second derivatives."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd import forward_ad
from torch.utils.checkpoint import checkpoint

from rnnzoo import recurrent_linear
from rnnzoo.recurrent_linear import BLOCK, _Pending, deferred_weight_grads

MODULE = sys.modules["rnnzoo.recurrent_linear"]
HIDDEN = 5
STEPS = 2 * BLOCK + 7  # two full blocks of pairs and a remainder

Linear = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def parameters(bias: bool) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    w = (0.4 * torch.randn(HIDDEN, HIDDEN, generator=gen, dtype=torch.float64)).requires_grad_()
    b = torch.randn(HIDDEN, generator=gen, dtype=torch.float64).requires_grad_() if bias else None
    h0 = torch.randn(3, HIDDEN, generator=gen, dtype=torch.float64).requires_grad_()
    xs = torch.randn(STEPS, 3, HIDDEN, generator=gen, dtype=torch.float64)
    return w, b, h0, xs


def unroll(linear: Linear, w: Tensor, b: Tensor | None, h0: Tensor, xs: Tensor) -> Tensor:
    """An Elman-like recurrence whose loss reads every step."""
    h, loss = h0, h0.new_zeros(())
    for x in xs:
        h = torch.tanh(x + linear(h, w, b))
        loss = loss + (h * x).sum()
    return loss


def deferred(linear: Linear = recurrent_linear) -> Callable[..., Tensor]:
    def run(*args: Tensor) -> Tensor:
        with deferred_weight_grads():
            return unroll(linear, *args)  # type: ignore[arg-type]

    return run


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_values_and_gradients_match_f_linear(bias: bool) -> None:
    w, b, h0, xs = parameters(bias)
    inputs = [t for t in (w, b, h0) if t is not None]
    expected_loss = unroll(F.linear, w, b, h0, xs)
    expected = torch.autograd.grad(expected_loss, inputs)
    loss = deferred()(w, b, h0, xs)
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=0)
    assert loss.grad_fn is not None
    got = torch.autograd.grad(loss, inputs)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def test_repeated_and_partial_backward_passes_do_not_mix() -> None:
    """A pass that only wants dL/dh0 leaves its pairs behind; a later full pass
    over the same graph must not count them, and two full passes add up."""
    w, b, h0, xs = parameters(True)
    expected = torch.autograd.grad(unroll(F.linear, w, b, h0, xs), [w, b, h0])
    loss = deferred()(w, b, h0, xs)
    (grad_h0,) = torch.autograd.grad(loss, [h0], retain_graph=True)
    torch.testing.assert_close(grad_h0, expected[2])
    loss.backward(retain_graph=True)
    loss.backward()
    for param, e in zip((w, b, h0), expected, strict=True):
        assert param.grad is not None
        torch.testing.assert_close(param.grad, 2 * e, rtol=1e-12, atol=1e-12)


def test_second_derivatives_match_f_linear() -> None:
    """With create_graph the product is differentiated twice (gradient penalties)."""
    w, b, h0, xs = parameters(True)

    def penalty(run: Callable[..., Tensor]) -> tuple[Tensor, ...]:
        (g,) = torch.autograd.grad(run(w, b, h0, xs), [w], create_graph=True)
        return torch.autograd.grad(g.pow(2).sum(), [w, b, h0])

    for got, expected in zip(penalty(deferred()), penalty(deferred(F.linear)), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_outside_the_loop_or_without_gradients() -> None:
    """Outside the loop it is F.linear; without a gradient to form, or with frozen
    weights, the weight gradient is never deferred."""
    w, b, h0, xs = parameters(True)
    assert recurrent_linear(h0, w, b).grad_fn.name() == F.linear(h0, w, b).grad_fn.name()
    expected = torch.autograd.grad(unroll(F.linear, w, b, h0, xs), [w, b, h0])
    loss = unroll(recurrent_linear, w, b, h0, xs)
    assert loss.grad_fn is not None
    for got, e in zip(torch.autograd.grad(loss, [w, b, h0]), expected, strict=True):
        torch.testing.assert_close(got, e, rtol=1e-12, atol=1e-12)
    with deferred_weight_grads(), torch.no_grad():
        torch.testing.assert_close(recurrent_linear(h0, w, b), F.linear(h0, w, b))
    with deferred_weight_grads():
        inside = recurrent_linear(h0, w, b)
        frozen = recurrent_linear(h0.detach(), w.detach(), b.detach())
        frozen_weight = recurrent_linear(h0, w.detach(), b)
    assert inside.grad_fn.next_functions[2][0].name() == "_ParametersBackward"
    assert frozen.grad_fn is None
    assert all(
        node is None or node.name() != "_ParametersBackward"
        for node, _ in frozen_weight.grad_fn.next_functions
    )
    (grad_b,) = torch.autograd.grad(frozen_weight.sum(), [b])
    torch.testing.assert_close(grad_b, torch.full_like(b, 3.0))


def test_a_pass_that_does_not_reach_the_weights_keeps_no_pairs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """autograd.grad of the states (the gradient-flow probes) must neither keep
    pairs nor multiply them: nothing would ever collect them."""
    kept: list[int] = []
    add = _Pending.add

    def counting_add(self: _Pending, h: Tensor, grad: Tensor) -> None:
        kept.append(1)
        add(self, h, grad)

    monkeypatch.setattr(_Pending, "add", counting_add)
    w, b, h0, xs = parameters(True)
    expected = torch.autograd.grad(unroll(F.linear, w, b, h0, xs), [w, b, h0])
    loss = deferred()(w, b, h0, xs)
    (grad_h0,) = torch.autograd.grad(loss, [h0], retain_graph=True)
    torch.testing.assert_close(grad_h0, expected[2], rtol=1e-12, atol=1e-12)
    assert kept == []
    for got, e in zip(torch.autograd.grad(loss, [w, b]), expected[:2], strict=True):
        torch.testing.assert_close(got, e, rtol=1e-12, atol=1e-12)
    assert len(kept) == STEPS


@pytest.mark.parametrize("hooks", ["seen", "unknown"])
@pytest.mark.parametrize("reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize("rows", [HIDDEN, 3 * HIDDEN], ids=["square", "gates"])
def test_checkpointed_steps_inside_the_loop(
    reentrant: bool, rows: int, hooks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step under torch.utils.checkpoint is recomputed after the loop has ended,
    outside its scope: what the recomputation saves must still fit the backward
    (also where torch cannot tell whether saved-tensor hooks are on)."""
    if hooks == "unknown":
        monkeypatch.setattr(MODULE, "_saved_tensor_hooks_on", lambda: True)
    gen = torch.Generator().manual_seed(1)
    w = (0.4 * torch.randn(rows, HIDDEN, generator=gen, dtype=torch.float64)).requires_grad_()
    b = torch.randn(rows, generator=gen, dtype=torch.float64).requires_grad_()
    back = torch.randn(HIDDEN, rows, generator=gen, dtype=torch.float64)  # gates -> state
    h0 = torch.randn(3, HIDDEN, generator=gen, dtype=torch.float64).requires_grad_()
    xs = torch.randn(BLOCK + 5, 3, rows, generator=gen, dtype=torch.float64)

    def step(linear: Linear, h: Tensor, x: Tensor) -> Tensor:
        return torch.tanh(x + linear(h, w, b)) @ back.t()

    def grads(linear: Linear, checkpointed: bool) -> tuple[Tensor, ...]:
        with deferred_weight_grads():
            h, loss = h0, h0.new_zeros(())
            for x in xs:
                if checkpointed:
                    h = checkpoint(step, linear, h, x, use_reentrant=reentrant)
                else:
                    h = step(linear, h, x)
                loss = loss + (h * h).sum()
        for t in (w, b, h0):
            t.grad = None
        loss.backward()  # reentrant checkpoints take no autograd.grad
        return tuple(t.grad for t in (w, b, h0))  # type: ignore[misc]

    for got, e in zip(grads(recurrent_linear, True), grads(F.linear, False), strict=True):
        torch.testing.assert_close(got, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(2, 3), (), (4,)], ids=["3-d", "1-d", "2-d"])
def test_states_of_any_rank(shape: tuple[int, ...]) -> None:
    w, b, _, _ = parameters(True)
    gen = torch.Generator().manual_seed(2)
    h0 = torch.randn(*shape, HIDDEN, generator=gen, dtype=torch.float64).requires_grad_()
    xs = torch.randn(BLOCK + 3, *shape, HIDDEN, generator=gen, dtype=torch.float64)
    expected = torch.autograd.grad(unroll(F.linear, w, b, h0, xs), [w, b, h0])
    got = torch.autograd.grad(deferred()(w, b, h0, xs), [w, b, h0])
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("detector", ["torch", "older torch"])
def test_function_transforms_forward_mode_and_batched_gradients(
    detector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.func, forward-mode AD and batched vector-Jacobian products see F.linear."""
    if detector == "older torch":
        monkeypatch.setattr(MODULE, "_is_legacy_batched", MODULE._batched_by_dispatch_keys)
    w, b, h0, xs = parameters(True)
    xs = xs[:5]

    def loss_of(linear: Linear) -> Callable[[Tensor], Tensor]:
        return lambda weight: deferred(linear)(weight, b, h0, xs)

    for run in (
        lambda f: torch.func.grad(f)(w.detach()),
        lambda f: torch.func.jvp(f, (w.detach(),), (torch.ones_like(w),))[1],
        lambda f: torch.autograd.functional.jacobian(f, w.detach(), vectorize=True),
    ):
        torch.testing.assert_close(run(loss_of(recurrent_linear)), run(loss_of(F.linear)))

    def tangent(linear: Linear) -> Tensor:
        with forward_ad.dual_level():
            dual = forward_ad.make_dual(w, torch.ones_like(w))
            return forward_ad.unpack_dual(deferred(linear)(dual, b, h0, xs)).tangent

    torch.testing.assert_close(tangent(recurrent_linear), tangent(F.linear))

    def batched(linear: Linear) -> Tensor:
        with deferred_weight_grads():
            h = h0
            for x in xs:
                h = torch.tanh(x + linear(h, w, b))
        eye = torch.eye(h.numel(), dtype=h.dtype).reshape(-1, *h.shape)
        return torch.autograd.grad(h, [w], eye, is_grads_batched=True)[0]

    torch.testing.assert_close(batched(recurrent_linear), batched(F.linear))


@pytest.mark.parametrize("detector", ["torch", "older torch"])
def test_compiled_cell_inside_the_loop(detector: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile traces F.linear (the deferral is for the eager loop)."""
    if detector == "older torch":
        monkeypatch.setattr(MODULE, "_compiling", MODULE._dynamo_compiling)
    torch._dynamo.reset()
    w, b, h0, xs = parameters(True)
    xs = xs[:8]

    def step(h: Tensor, x: Tensor) -> Tensor:
        return torch.tanh(x + recurrent_linear(h, w, b))

    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)

    def grads(fn: Callable[[Tensor, Tensor], Tensor]) -> tuple[Tensor, ...]:
        with deferred_weight_grads():
            h, loss = h0, h0.new_zeros(())
            for x in xs:
                h = fn(h, x)
                loss = loss + (h * x).sum()
        return torch.autograd.grad(loss, [w, b, h0])

    for got, e in zip(grads(compiled), grads(step), strict=True):
        torch.testing.assert_close(got, e, rtol=1e-12, atol=1e-12)
