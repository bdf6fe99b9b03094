"""The engine's step loop against the reference loop of rnnzoo.testing: outputs,
final and per-step states, and every gradient, with and without padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_run import rnnzoo, write
from rnnzoo_example_plugin import ExampleLeakyCell

from rnnzoo.cell import Cell
from rnnzoo.recurrence import step_loop
from rnnzoo.testing import reference_step_loop
from rnnzoo_plugins.activations import ReLU, Tanh
from rnnzoo_plugins.cells.elman import ElmanCell
from rnnzoo_plugins.cells.gru import GRUCell
from rnnzoo_plugins.cells.lstm import LSTMCell

ROOT = Path(__file__).resolve().parents[1]
TOL = {"atol": 1e-5, "rtol": 1e-5}

CELLS = {
    "lstm": lambda i, h: LSTMCell(i, h, Tanh()),
    "gru": lambda i, h: GRUCell(i, h, Tanh()),
    "elman_relu": lambda i, h: ElmanCell(i, h, ReLU()),
    "example_leaky": lambda i, h: ExampleLeakyCell(i, h, Tanh()),  # without project_input
}


def run(loop, cell: Cell, x: torch.Tensor, lengths: torch.Tensor | None):
    """Outputs, final state, recorded states and the gradients of a loss over all."""
    x = x.clone().requires_grad_(True)
    state = tuple(
        (
            0.1
            * torch.randn(x.shape[0], cell.hidden_size, generator=torch.Generator().manual_seed(k))
        ).requires_grad_(True)
        for k, _ in enumerate(cell.state_layout)
    )
    out, final, recorded = loop(cell, x, state, lengths, True)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    loss = (out * weights).sum() + sum(f.pow(2).sum() for f in final)
    loss = loss + sum(s.sin().sum() for state in recorded[::3] for s in state)
    inputs = [x, *state, *cell.parameters()]
    grads = torch.autograd.grad(loss, inputs)
    return out, final, recorded, grads


#: no padding; padding from step 5 on (the first steps unmasked); a sequence of one
#: step and one of none (every step masked)
LENGTHS = {"full": None, "padded": [13, 9, 5, 7], "empty": [13, 9, 1, 0]}


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("case", list(LENGTHS))
def test_step_loop_matches_reference_loop(name: str, case: str) -> None:
    torch.manual_seed(0)
    cell = CELLS[name](5, 8)
    x = torch.randn(4, 13, 5)
    lengths = None if LENGTHS[case] is None else torch.tensor(LENGTHS[case])
    ref = run(reference_step_loop, cell, x, lengths)
    fast = run(step_loop, cell, x, lengths)
    torch.testing.assert_close(fast[0], ref[0], **TOL)
    for got, want in zip(fast[1], ref[1], strict=True):
        torch.testing.assert_close(got, want, **TOL)
    assert len(fast[2]) == len(ref[2]) == x.shape[1]
    for got, want in zip(fast[2], ref[2], strict=True):
        assert len(got) == len(want) == len(cell.state_layout)
        for got_part, want_part in zip(got, want, strict=True):
            torch.testing.assert_close(got_part, want_part, **TOL)
    for got, want in zip(fast[3], ref[3], strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_padded_steps_output_zeros_and_keep_the_state() -> None:
    torch.manual_seed(1)
    cell = LSTMCell(3, 4, Tanh())
    x = torch.randn(2, 6, 3)
    state = cell.initial_state(2, x.device)
    out, final, _ = step_loop(cell, x, state, torch.tensor([6, 2]), False)
    assert torch.count_nonzero(out[1, 2:]) == 0
    short, short_final, _ = step_loop(cell, x[1:, :2], cell.initial_state(1, x.device), None, False)
    torch.testing.assert_close(out[1, :2], short[0], **TOL)
    for got, want in zip(final, short_final, strict=True):
        torch.testing.assert_close(got[1], want[0], **TOL)


BROKEN_CELL = """
import torch
from torch import nn

from rnnzoo import Cell, hookimpl


class Broken(Cell):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.w = nn.Linear(input_size + hidden_size, hidden_size + 1)

    def forward(self, x_t, state):
        (h,) = state
        wide = torch.tanh(self.w(torch.cat([x_t, h], -1)))
        h = wide[:, :-1]
        return RETURN


@hookimpl
def rnnzoo_cells():
    return {"broken": Broken}
"""


@pytest.mark.parametrize(
    ("returns", "says"),
    [
        ("h, h", "returned a Tensor as its new state"),
        ("h, (h, h)", "returned a tuple of 2 as its new state"),
        ("wide, (wide,)", "returned state 'h' of shape (8, 5); it must keep the shape (8, 4)"),
        ("wide, (h,)", "returned an output of shape (8, 5); it must be (8, 4)"),
    ],
    ids=["bare-tensor", "tuple-too-long", "extra-unit", "wrong-output"],
)
def test_a_cell_that_breaks_the_state_contract_is_named(tmp_path, returns: str, says: str) -> None:
    plugin = write(tmp_path / "broken.py", BROKEN_CELL.replace("RETURN", returns))
    result = rnnzoo(
        "-p", plugin, "train", ROOT / "experiments" / "adding.yaml", "model.cell=broken",
        "model.hidden_size=4", "task.length=5", "task.val_size=8", "trainer.batch_size=8",
        "trainer.steps=2", "trainer.progress=false", "gradflow.every=0",
        "tracking.wandb_mode=disabled", "--run-dir", tmp_path / "run",
    )  # fmt: skip
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    assert "Cell Broken (" in result.err and says in result.err
