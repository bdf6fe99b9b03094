"""The example plugin's cell keeps rnnzoo's cell contract (the check_cell fixture
comes with rnnzoo's pytest plugin) and computes its equations."""

import torch
from rnnzoo_example_plugin import ExampleLeakyCell

from rnnzoo import Activation
from rnnzoo.recurrence import step_loop


def test_keeps_the_cell_contract(check_cell):
    check_cell(ExampleLeakyCell)
    check_cell(ExampleLeakyCell, activation="relu", gate_bias=-2.0)


class Tanh(Activation):
    def function(self, z):
        return torch.tanh(z)


def test_computes_its_equations():
    torch.manual_seed(0)
    cell = ExampleLeakyCell(3, 4, Tanh()).double()
    x, h = torch.randn(2, 6, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    with torch.no_grad():
        outputs, (final,), _ = step_loop(cell, x, (h,), None, False)
        for t in range(6):
            f = torch.sigmoid(cell.gate_x(x[:, t]) + h @ cell.gate_h.weight.T)
            c = torch.tanh(cell.cand_x(x[:, t]) + (f * h) @ cell.cand_h.weight.T)
            h = (1 - f) * h + f * c
            torch.testing.assert_close(outputs[:, t], h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, h, rtol=1e-12, atol=1e-12)
