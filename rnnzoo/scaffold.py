"""``rnnzoo new-cell NAME``: a ready, pip-installable cell plugin package.

The package registers its cell through the ``rnnzoo`` entry-point group, documents
the equations in the cell's docstring, routes its nonlinearity through the injected
activation, names its recurrent weights, and tests itself with
:mod:`rnnzoo.testing` (the ``check_cell`` fixture) and an independent
implementation of its equations.
"""

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from rnnzoo.errors import UsageError

NAME = re.compile(r"[a-z][a-z0-9_]*")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "The $name recurrent cell, as an rnnzoo plugin"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["rnnzoo"]

[project.optional-dependencies]
test = ["pytest"]

[project.entry-points.rnnzoo]
$name = "$module"

[tool.setuptools]
packages = ["$module"]
"""

INIT = '''\
"""rnnzoo plugin: registers the $name cell (entry-point group ``rnnzoo``)."""

from __future__ import annotations

from rnnzoo import Cell, hookimpl
from $module.cell import $cls

__all__ = ["$cls", "rnnzoo_cells"]


@hookimpl
def rnnzoo_cells() -> dict[str, type[Cell]]:
    return {"$name": $cls}
'''

CELL = '''\
"""The $name cell. Say here what it is, and cite the paper it comes from.

One step, with x_t the input, h the previous state and g the activation plugin
chosen by ``model.activation`` (tanh unless the experiment says otherwise)::

    a  = sigmoid(leak)                  a learned rate per unit, in (0, 1)
    z  = W x_t + b + U h
    h' = (1 - a) * h + a * g(z)

Change the equations, the parameters and ``forward`` together; the tests in
``tests/test_$name.py`` check the cell contract and these equations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Activation, Cell, State


class $cls(Cell):
    """Leaky recurrent cell: h' = (1 - a) * h + a * g(W x + b + U h), a = sigmoid(leak).

    ``leak_init`` is the leak's logit at the start: 0 makes a = 0.5, large values an
    ordinary Elman step (a near 1), very negative ones a cell that keeps its state.
    """

    def __init__(
        self, input_size: int, hidden_size: int, activation: Activation, leak_init: float = 0.0
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation  # call it: model.activation then takes effect
        bound = 1 / math.sqrt(hidden_size)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.leak = nn.Parameter(torch.full((hidden_size,), leak_init))

    def project_input(self, x: Tensor) -> Tensor:
        """W x_t + b for every step at once: one matmul before the time loop."""
        return F.linear(x, self.weight_ih, self.bias)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        a = torch.sigmoid(self.leak)
        z = x_t + F.linear(h, self.weight_hh)
        h = (1 - a) * h + a * self.activation(z)
        return h, (h,)

    def recurrent_weights(self) -> dict[str, Tensor]:
        """U multiplies the previous state: runs log its largest singular value."""
        return {"weight_hh": self.weight_hh}
'''

TESTS = '''\
"""The $name cell keeps rnnzoo's cell contract and computes its equations."""

from __future__ import annotations

import torch

from rnnzoo.plugins import plugin_manager
from rnnzoo.recurrence import step_loop
from rnnzoo.registry import Registry
from $module import $cls


def test_keeps_the_cell_contract(check_cell):
    check_cell($cls)
    check_cell($cls, activation="relu", leak_init=3.0)


def test_is_registered_under_its_name():
    assert Registry(plugin_manager()).get("cell", "$name").factory is $cls


def test_computes_its_equations():
    """The docstring's equations written out, step by step, in float64."""
    torch.manual_seed(0)
    tanh = Registry(plugin_manager()).get("activation", "tanh").factory()
    cell = $cls(3, 5, activation=tanh, leak_init=0.5).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    h = torch.randn(2, 5, dtype=torch.float64)
    with torch.no_grad():
        outputs, (final,), _ = step_loop(cell, x, (h,), None, False)
        a = torch.sigmoid(cell.leak)
        for t in range(x.shape[1]):
            z = x[:, t] @ cell.weight_ih.T + cell.bias + h @ cell.weight_hh.T
            h = (1 - a) * h + a * torch.tanh(z)
            torch.testing.assert_close(outputs[:, t], h, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final, h, rtol=1e-12, atol=1e-12)
'''

EXPERIMENT = """\
# The adding problem with the $name cell: two marked numbers among T=50 must be
# remembered and summed. Predicting the mean gives MSE 1/6 = 0.167; clearly below
# that, the cell carries information across the sequence.
#   rnnzoo train experiments/adding.yaml
task:
  name: adding
  length: 50
  val_size: 1000

model:
  cell: $name
  hidden_size: 64
  head: sequence

controllers:
  clip_norm:
    max_norm: 1.0

optim:
  name: adam
  lr: 0.003

trainer:
  steps: 1500
  batch_size: 64
  eval_every: 250

gradflow:
  every: 100
"""

README = """\
# $dist

The `$name` recurrent cell as an [rnnzoo](https://pypi.org/project/rnnzoo/) plugin:
once installed, every `rnnzoo` command knows it.

```bash
pip install -e .                              # registers the cell (entry point 'rnnzoo')
rnnzoo describe $name                         # its equations and settings
rnnzoo check-cell $name                       # the cell contract, rule by rule
rnnzoo train experiments/adding.yaml          # the adding problem, T = 50
rnnzoo train experiments/adding.yaml model.cell_args.leak_init=2 model.activation=relu
rnnzoo gradflow --configs $name,lstm          # how far its gradient reaches at initialisation
pip install -e '.[test]' && pytest            # the contract and the equations
```

The equations are in the docstring of `$module/cell.py`. The cell calls the
activation rnnzoo injects (`model.activation`), so the gradient-flow probes log the
mean activation derivative, and names its recurrent matrix in `recurrent_weights()`,
so they log its largest singular value.
"""

FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    "$module/__init__.py": INIT,
    "$module/cell.py": CELL,
    "tests/test_$name.py": TESTS,
    "experiments/adding.yaml": EXPERIMENT,
}


def names(name: str) -> dict[str, str]:
    """The distribution, module and class names of the package for cell ``name``."""
    if not NAME.fullmatch(name):
        raise UsageError(
            f"'{name}' cannot name a cell package: use lower-case letters, digits and "
            "underscores, starting with a letter (for example 'leaky_gru')."
        )
    return {
        "name": name,
        "dist": "rnnzoo-" + name.replace("_", "-"),
        "module": f"rnnzoo_{name}",
        "cls": "".join(part.capitalize() for part in name.split("_")) + "Cell",
    }


def write_package(name: str, parent: Path) -> tuple[Path, list[Path]]:
    """Write the package of cell ``name`` to ``parent/rnnzoo-NAME``; return its folder
    and the files written. An existing, non-empty folder is left alone (an error)."""
    fill = names(name)
    root = parent / fill["dist"]
    if root.exists() and any(root.iterdir()):
        raise UsageError(f"'{root}' exists and is not empty: choose another --dir or name.")
    written = []
    for relative, template in FILES.items():
        path = root / Template(relative).substitute(fill)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template).substitute(fill), encoding="utf-8")
        written.append(path)
    return root, written
