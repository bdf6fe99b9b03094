"""Built-in activations: the derivative each declares is autograd's, and it stays
within (and fills) its declared range."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from rnnzoo import Activation
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry

BUILT_INS = ["tanh", "relu", "sigmoid", "identity", "leaky_relu", "hardtanh"]
#: (name, constructor arguments): the defaults and some non-default settings
SETTINGS: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in BUILT_INS] + [
    ("leaky_relu", {"negative_slope": 0.2}),
    ("leaky_relu", {"negative_slope": 3.0}),
    ("hardtanh", {"min_val": -2.0, "max_val": 0.5}),
]
IDS = [f"{name}{args or ''}" for name, args in SETTINGS]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(plugin_manager())


def build(registry: Registry, name: str, args: dict[str, Any]) -> Activation:
    activation = registry.get("activation", name).build(args, "model.activation_args")
    assert isinstance(activation, Activation)
    return activation


def test_every_built_in_is_registered(registry: Registry) -> None:
    assert set(BUILT_INS) <= set(registry.names("activation"))
    for name in BUILT_INS:
        assert registry.get("activation", name).plugin == "rnnzoo_plugins.activations"


@pytest.mark.parametrize(("name", "args"), SETTINGS, ids=IDS)
def test_derivative_equals_autograd(registry: Registry, name: str, args: dict[str, Any]) -> None:
    activation = build(registry, name, args)
    torch.manual_seed(0)
    z = (3 * torch.randn(4000, dtype=torch.float64)).requires_grad_(True)
    (expected,) = torch.autograd.grad(activation(z).sum(), z)
    torch.testing.assert_close(activation.derivative(z.detach()), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "args"), SETTINGS, ids=IDS)
def test_derivative_stays_in_and_fills_its_range(
    registry: Registry, name: str, args: dict[str, Any]
) -> None:
    """Every value lies in ``derivative_range``, and both ends are reached (or
    approached): the range is the derivative's, not a loose bound."""
    activation = build(registry, name, args)
    low, high = activation.derivative_range
    z = torch.cat([torch.linspace(-30, 30, 60001, dtype=torch.float64), 5 * torch.randn(1000)])
    slope = activation.derivative(z)
    assert float(slope.min()) >= low and float(slope.max()) <= high
    assert float(slope.min()) == pytest.approx(low, abs=1e-9)
    assert float(slope.max()) == pytest.approx(high, abs=1e-9)


@pytest.mark.parametrize("name", BUILT_INS)
def test_forward_records_pre_activations_on_request(registry: Registry, name: str) -> None:
    activation = build(registry, name, {})
    z = torch.randn(3, 4)
    activation(z)
    assert activation.recorded is None
    activation.recorded = []
    out = activation(z)
    assert len(activation.recorded) == 1 and torch.equal(activation.recorded[0], z)
    assert torch.equal(out, activation.function(z))


def test_can_die_marks_the_activations_with_a_zero_derivative(registry: Registry) -> None:
    dying = {name for name in BUILT_INS if build(registry, name, {}).can_die}
    assert dying == {"relu", "leaky_relu", "hardtanh"}
    assert build(registry, "relu", {}).derivative(torch.tensor([-1.0])).item() == 0.0


def test_default_derivative_uses_autograd() -> None:
    """A plugin activation that gives only its function still has a derivative."""

    class Softsign(Activation):
        def function(self, z: torch.Tensor) -> torch.Tensor:
            return z / (1 + z.abs())

    z = torch.linspace(-5, 5, 101, dtype=torch.float64)
    torch.testing.assert_close(Softsign().derivative(z), 1 / (1 + z.abs()) ** 2)


# -- what the derivative range says about the gradient -----------------------------


class Doubled(Activation):
    """2 tanh(z): g'(z) = 2 (1 - tanh(z)^2) lies in (0, 2]."""

    derivative_range = (0.0, 2.0)

    def function(self, z: torch.Tensor) -> torch.Tensor:
        return 2 * torch.tanh(z)


class Undeclared(Activation):
    """A plugin activation that gives its function only."""

    def function(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z)


@pytest.mark.parametrize(
    ("name", "args", "bound", "note"),
    [
        ("tanh", {}, 1.0, "g'(z) lies in [0, 1]: the activation never amplifies"),
        ("relu", {}, 1.0, "g'(z) lies in [0, 1]: the activation never amplifies"),
        ("hardtanh", {}, 1.0, "g'(z) lies in [0, 1]: the activation never amplifies"),
        ("identity", {}, 1.0, "g'(z) lies in [1, 1]: the activation never amplifies"),
        ("leaky_relu", {}, 1.0, "g'(z) lies in [0.01, 1]: the activation never amplifies"),
        ("sigmoid", {}, 0.25, "g'(z) lies in [0, 0.25]: the activation shrinks the gradient"),
        ("leaky_relu", {"negative_slope": 3.0}, 3.0, "g'(z) lies in [1, 3]: it can exceed 1"),
    ],
)
def test_amplification_note_follows_the_declared_range(
    registry: Registry, name: str, args: dict[str, Any], bound: float, note: str
) -> None:
    activation = build(registry, name, args)
    assert activation.derivative_bound == bound
    assert activation.amplification_note().startswith(note)
    # the words agree with the derivative itself, sampled far into both tails
    z = torch.linspace(-30, 30, 60001, dtype=torch.float64)
    amplifies = bool((activation.derivative(z).abs() > 1).any())
    assert amplifies == ("can amplify" in activation.amplification_note())
    assert amplifies == (bound > 1)


def test_a_plugin_range_past_1_can_amplify_and_no_range_is_unknown() -> None:
    doubled = Doubled()
    assert doubled.derivative_bound == 2.0
    assert doubled.amplification_note() == (
        "g'(z) lies in [0, 2]: it can exceed 1, so the activation can amplify the "
        "gradient, which can grow (explode) through time"
    )
    assert float(doubled.derivative(torch.zeros(1, dtype=torch.float64))) == pytest.approx(2.0)
    undeclared = Undeclared()
    assert undeclared.derivative_bound == float("inf")
    assert "unknown" in undeclared.amplification_note()
    assert "derivative_range" in undeclared.amplification_note()
