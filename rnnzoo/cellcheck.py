"""Check a cell class against the cell contract, rule by rule.

:func:`cell_contract` runs every rule of :data:`RULES` on freshly built instances
of a cell (in float64, on CUDA when available, in eval mode) and returns what each
rule found; :func:`rnnzoo.testing.check_cell` raises one :class:`CellContractError`
that lists every broken rule. The rules themselves are in :mod:`rnnzoo.cellrules`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rnnzoo.activation import Activation
from rnnzoo.cell import Cell, State

#: input size, hidden size, batch and steps of the instances the rules check
INPUT, HIDDEN, BATCH, STEPS = 3, 4, 4, 5
#: a sequence of every length from full to none, unsorted
LENGTHS = (STEPS, 3, 1, 0)

ActivationSource = str | Activation | Callable[[], Activation] | None


@dataclass(frozen=True)
class RuleResult:
    """What one rule found: ``passed`` is ``None`` when the rule did not apply
    (or could not run because a rule it needs failed); ``detail`` says what was
    checked, what broke, or why it was skipped."""

    rule: str
    passed: bool | None
    detail: str

    @property
    def status(self) -> str:
        return {True: "passed", False: "FAILED", None: "skipped"}[self.passed]


class CellContractError(AssertionError):
    """A cell breaks one or more rules of the cell contract; ``failed`` holds them."""

    def __init__(self, cell: str, results: list[RuleResult]) -> None:
        self.cell = cell
        self.results = results
        self.failed = [r for r in results if r.passed is False]
        super().__init__(failure_report(cell, self.failed))


def failure_report(cell: str, failed: list[RuleResult]) -> str:
    lines = [f"Cell {cell} breaks {len(failed)} rule(s) of the cell contract:"]
    lines += [f"  - {r.rule}: {r.detail}" for r in failed]
    lines.append(
        "(docs/writing-a-plugin.md explains each rule; `rnnzoo check-cell NAME` runs "
        "the same checks)"
    )
    return "\n".join(lines)


class RuleFailure(Exception):
    """Raised by a rule: the cell breaks it, for the reason given."""


class RuleSkipped(Exception):
    """Raised by a rule that does not apply to this cell, saying why."""


class ProbeActivation(Activation):
    """``scale * tanh(z)``, recording what it sees: the activation rule injects it
    and checks that the cell calls it and uses its result."""

    derivative_range = (0.0, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.scale = 1.0

    def function(self, z: Tensor) -> Tensor:
        return self.scale * torch.tanh(z)


@dataclass
class Subject:
    """The cell under check and how to build it: every rule builds fresh instances."""

    factory: Callable[..., Any]
    settings: dict[str, Any]
    activation: ActivationSource
    device: torch.device
    name: str
    dtype: torch.dtype = torch.float64
    data: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))

    @property
    def takes_activation(self) -> bool:
        target = self.factory.__init__ if inspect.isclass(self.factory) else self.factory
        return "activation" in inspect.signature(target).parameters

    def make_activation(self) -> Activation:
        source = self.activation
        if isinstance(source, Activation):
            return copy.deepcopy(source)
        if isinstance(source, str):
            from rnnzoo.plugins import plugin_manager
            from rnnzoo.registry import Registry

            made = Registry(plugin_manager()).get("activation", source).factory()
        else:
            made = (source or ProbeActivation)()
        if not isinstance(made, Activation):
            raise RuleFailure(
                f"the activation given built {type(made).__name__}, not an Activation"
            )
        return made

    def build(
        self,
        seed: int = 0,
        *,
        sizes: tuple[int, int] = (INPUT, HIDDEN),
        activation: Activation | None = None,
        dtype: torch.dtype | None = None,
    ) -> Cell:
        """A fresh instance (parameters drawn with ``seed``), on the device, in eval mode."""
        supplied: dict[str, Any] = {}
        if self.takes_activation:
            supplied["activation"] = activation or self.make_activation()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            cell = self.factory(*sizes, **supplied, **self.settings)
        if not isinstance(cell, Cell):
            raise RuleFailure(f"the factory built {type(cell).__name__}, not an rnnzoo.Cell")
        return cell.to(device=self.device, dtype=dtype or self.dtype).eval()

    def randn(self, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        out = torch.randn(*shape, generator=self.data, dtype=torch.float64)
        return out.to(device=self.device, dtype=dtype or self.dtype)

    def inputs(self, cell: Cell, batch: int = BATCH, steps: int = STEPS) -> tuple[Tensor, State]:
        """Random inputs ``[batch, steps, input_size]`` and a random initial state."""
        x = self.randn(batch, steps, cell.input_size)
        state = tuple(0.5 * self.randn(batch, cell.hidden_size) for _ in cell.state_layout)
        return x, state

    def lengths(self) -> Tensor:
        return torch.tensor(LENGTHS, device=self.device)


#: float64 agreement of two computations of the same thing
CLOSE = {"rtol": 1e-7, "atol": 1e-9}


def close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=CLOSE["rtol"], atol=CLOSE["atol"]))


def gap(a: Tensor, b: Tensor) -> str:
    if a.shape != b.shape:
        return f"shape {tuple(a.shape)} instead of {tuple(b.shape)}"
    return f"by up to {float((a - b).detach().abs().max()):.2e}"


def describe(factory: Callable[..., Any], name: str | None) -> str:
    """``'leaky' (LeakyCell from my_cell)``, for messages."""
    what = getattr(factory, "__qualname__", repr(factory))
    where = getattr(factory, "__module__", None)
    label = f"{what} from {where}" if where else what
    return f"'{name}' ({label})" if name else label


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cell_contract(
    factory: Callable[..., Any],
    *,
    name: str | None = None,
    activation: ActivationSource = "tanh",
    device: str | torch.device | None = None,
    **settings: Any,
) -> list[RuleResult]:
    """Run every rule of the cell contract on ``factory`` (a :class:`~rnnzoo.Cell`
    class, or a function building one) with its ``settings``; return one result
    per rule, in the order of :data:`rnnzoo.cellrules.RULES`.

    ``activation`` is what a cell with an ``activation`` parameter receives: an
    activation plugin's name, an :class:`~rnnzoo.Activation` (copied for each
    instance) or a class. ``device`` defaults to CUDA when available.
    """
    from rnnzoo.cellrules import NEEDS, RULES

    subject = Subject(
        factory,
        dict(settings),
        activation,
        torch.device(device) if device is not None else default_device(),
        describe(factory, name),
    )
    results: list[RuleResult] = []
    for rule, check in RULES.items():
        broken = [r.rule for r in results if r.rule in NEEDS[rule] and r.passed is not True]
        if broken:
            results.append(RuleResult(rule, None, f"not checked: needs {', '.join(broken)}"))
            continue
        try:
            detail = check(subject)
        except RuleSkipped as skip:
            results.append(RuleResult(rule, None, str(skip)))
        except RuleFailure as failure:
            results.append(RuleResult(rule, False, str(failure)))
        except Exception as exc:  # a cell that crashes breaks the rule that ran it
            text = str(exc).strip()
            message = f": {text.splitlines()[0]}" if text else ""
            results.append(RuleResult(rule, False, f"raised {type(exc).__name__}{message}"))
        else:
            results.append(RuleResult(rule, True, detail))
    return results
