"""recurrent_linear against F.linear: values, first and second derivatives."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnzoo import recurrent_linear
from rnnzoo.recurrent_linear import BLOCK, deferred_weight_grads

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


def test_plain_linear_outside_the_loop_or_without_gradients() -> None:
    w, b, h0, _ = parameters(True)
    assert recurrent_linear(h0, w, b).grad_fn.name() == F.linear(h0, w, b).grad_fn.name()
    with deferred_weight_grads(), torch.no_grad():
        torch.testing.assert_close(recurrent_linear(h0, w, b), F.linear(h0, w, b))
    with deferred_weight_grads():
        inside = recurrent_linear(h0, w, b)
        frozen = recurrent_linear(h0, w.detach(), b.detach())
    assert inside.grad_fn.name() == "_StepBackward"
    assert frozen.grad_fn.name() == F.linear(h0, w.detach(), b.detach()).grad_fn.name()
