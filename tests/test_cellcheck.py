"""rnnzoo.testing.check_cell: every built-in cell keeps the contract, and a cell
that breaks one rule is told exactly that rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_run import rnnzoo, write
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.testing import CellContractError, cell_contract, check_cell

REGISTRY = Registry(plugin_manager())
#: every registered cell, with each activation for those that take one
CASES = [
    (c.name, act)
    for c in REGISTRY.components("cell")
    for act in (("tanh", "relu") if c.takes("activation") else (None,))
]


@pytest.mark.parametrize(("name", "activation"), CASES, ids=[f"{n}-{a}" for n, a in CASES])
def test_every_registered_cell_keeps_the_contract(name: str, activation: str | None) -> None:
    results = check_cell(
        REGISTRY.get("cell", name).factory, name=name, activation=activation or "tanh"
    )
    assert all(r.passed is not False for r in results)
    checked = {r.rule for r in results if r.passed}
    assert {"state", "output", "padding", "gradcheck", "state-dict"} <= checked


class Good(Cell):
    """An Elman cell that keeps every rule: h' = g(W x + U h + b)."""

    def __init__(self, input_size: int, hidden_size: int, activation: Activation) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        self.w = nn.Linear(input_size, hidden_size)
        self.u = nn.Linear(hidden_size, hidden_size, bias=False)

    def project_input(self, x: Tensor) -> Tensor:
        return self.w(x)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h = self.activation(x_t + self.u(state[0]))
        return h, (h,)

    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"u": self.u.weight}


class BareState(Good):
    def forward(self, x_t, state):  # type: ignore[override]
        h, _ = super().forward(x_t, state)
        return h, h


class WideOutput(Good):
    def forward(self, x_t, state):  # type: ignore[override]
        h, new = super().forward(x_t, state)
        return torch.cat([h, h], -1), new


class IgnoresActivation(Good):
    def forward(self, x_t, state):  # type: ignore[override]
        h = torch.tanh(x_t + self.u(state[0]))
        return h, (h,)


class NamesInputWeights(Good):
    def recurrent_weights(self) -> dict[str, Tensor]:
        return {"u": self.u.weight, "w": self.w.weight}


class SloppyFastPath(Good):
    def forward_sequence(self, x, state, lengths):  # type: ignore[override]
        steps, h = [], state[0]
        for x_t in self.project_input(x).unbind(1):
            h = self.activation(x_t + self.u(h))
            steps.append(h)
        return torch.stack(steps, 1), (h,)  # ignores lengths


class CausalConvInput(Good):
    def project_input(self, x: Tensor) -> Tensor:
        projected = self.w(x)
        return projected + 0.5 * F.pad(projected, (0, 0, 1, 0))[:, :-1]


class Float32State(Good):
    def forward(self, x_t, state):  # type: ignore[override]
        h = self.activation(x_t + state[0] * self.u.weight.diagonal())
        return h, (h,)

    def initial_state(self, batch_size, device, dtype=torch.float32):  # type: ignore[override]
        return (torch.zeros(batch_size, self.hidden_size),)


class MixesTheBatch(Good):
    def forward(self, x_t, state):  # type: ignore[override]
        h, _ = super().forward(x_t, state)
        h = h - h.mean(0)
        return h, (h,)


class WrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):  # type: ignore[override]
        y = torch.tanh(z)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return grad * (1 - y)  # should be 1 - y^2


class HandWrittenGradient(Cell):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.u = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x_t, state):  # type: ignore[override]
        h = WrongBackward.apply(self.u(torch.cat([x_t, state[0]], -1)))
        return h, (h,)


class UnsavedNoise(Good):
    def __init__(self, input_size: int, hidden_size: int, activation: Activation) -> None:
        super().__init__(input_size, hidden_size, activation)
        self.scale = torch.rand(hidden_size, dtype=torch.float64)  # not a buffer

    def forward(self, x_t, state):  # type: ignore[override]
        h, _ = super().forward(x_t, state)
        h = h * self.scale.to(h)
        return h, (h,)


class NeedsASetting(Good):
    def __init__(self, input_size: int, hidden_size: int, activation: Activation, k: int) -> None:
        super().__init__(input_size, hidden_size, activation)


BROKEN = {
    BareState: ("state", "forward's new state is a Tensor; the state is a tuple of 1 tensor"),
    WideOutput: ("output", "the output has shape (4, 8); it must be (4, 4)"),
    IgnoresActivation: ("activation", "never calls the activation it was given"),
    NamesInputWeights: ("recurrent-weights", "'w' does not only multiply the previous state"),
    SloppyFastPath: ("forward-sequence", "(padded batch) disagrees with the step loop"),
    CausalConvInput: ("project-input", "project_input of step 1 alone differs"),
    Float32State: ("dtype-device", "the initial state 'h' is torch.float32"),
    MixesTheBatch: ("padding", "mixes the sequences of a batch"),
    HandWrittenGradient: ("gradcheck", "finite differences: d outputs / d x is wrong"),
    UnsavedNoise: ("state-dict", "a fresh instance loading the state dict gives other"),
    NeedsASetting: ("construct", "missing 1 required positional argument: 'k'. Give the settings"),
}


def test_the_good_cell_passes_every_rule() -> None:
    results = check_cell(Good, name="good")
    assert [r.rule for r in results if not r.passed] == ["forward-sequence"]  # it has none


@pytest.mark.parametrize("cell", list(BROKEN), ids=[c.__name__ for c in BROKEN])
def test_a_broken_cell_fails_exactly_its_rule(cell: type[Cell]) -> None:
    rule, says = BROKEN[cell]
    with pytest.raises(CellContractError) as caught:
        check_cell(cell, name="broken")
    error = caught.value
    assert [r.rule for r in error.failed] == [rule], str(error)
    message = str(error)
    assert message.startswith(f"Cell 'broken' ({cell.__qualname__} from {__name__}) breaks 1 rule")
    assert f"  - {rule}: " in message and says in message, message


def test_rules_that_need_a_broken_one_are_skipped_not_failed() -> None:
    results = {r.rule: r for r in cell_contract(BareState)}
    assert results["state"].passed is False
    assert results["gradcheck"].passed is None
    assert "needs state" in results["gradcheck"].detail


def test_several_broken_rules_are_all_listed() -> None:
    class TwoMistakes(IgnoresActivation, NamesInputWeights):
        pass

    with pytest.raises(AssertionError, match="breaks 2 rule") as caught:
        check_cell(TwoMistakes)
    assert [r.rule for r in caught.value.failed] == ["recurrent-weights", "activation"]  # type: ignore[attr-defined]


def test_settings_reach_the_cell() -> None:
    results = check_cell(NeedsASetting, k=3)
    assert results[0].detail == "NeedsASetting(3, 4, activation, k=3)"


PLUGIN = '''
import torch
from torch import nn

from rnnzoo import Cell, hookimpl


class Plain(Cell):
    """h' = tanh(W x + U h), with tanh hard-wired although it takes an activation."""

    def __init__(self, input_size: int, hidden_size: int, activation, width: int = 1) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        self.w = nn.Linear(input_size, hidden_size)
        self.u = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x_t, state):
        h = torch.tanh(self.w(x_t) + self.u(state[0]))
        return h, (h,)


@hookimpl
def rnnzoo_cells():
    return {"plain": Plain}
'''


def test_check_cell_command_lists_the_rules_and_exits_0_or_1(tmp_path: Path) -> None:
    good = rnnzoo("check-cell", "gru", "--activation", "relu")
    assert good.code == 0, good.output
    assert "  passed   gradcheck " in good.out
    assert "0 failed" in good.out and "'gru' keeps the cell contract" in good.out

    plugin = write(tmp_path / "plain.py", PLUGIN)
    bad = rnnzoo("-p", plugin, "check-cell", "plain", "width=2")
    assert bad.code == 1, bad.output
    assert "FAILED   activation " in bad.out and "never calls the activation" in bad.out
    assert "  passed   recurrent-weights" not in bad.out  # it names none
    assert "1 failed" in bad.err and "'plain' breaks the cell contract" in bad.err

    typo = rnnzoo("-p", plugin, "check-cell", "plain", "widht=2")
    assert typo.code == 2 and "Did you mean 'width'?" in typo.err


def test_the_pytest_fixture_makes_a_contract_test_three_lines(tmp_path: Path) -> None:
    plugin = write(tmp_path / "plain.py", PLUGIN)
    write(
        tmp_path / "test_plain.py",
        """
        import importlib.util

        spec = importlib.util.spec_from_file_location("plain", "PLUGIN")
        plain = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(plain)


        def test_plain(check_cell):
            check_cell(plain.Plain)

        def test_lstm(check_cell):
            from rnnzoo_plugins.cells.lstm import LSTMCell
            check_cell(LSTMCell)
        """.replace("PLUGIN", str(plugin)),
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed" in result.stdout
    assert "Cell Plain from plain breaks 1 rule(s)" in result.stdout
    assert "  - activation: never calls the activation" in result.stdout
    assert "def check(" not in result.stdout  # no traceback into rnnzoo
