"""Public torch only: nothing in rnnzoo/ or plugins/ reaches for a private torch API.

Private APIs (``torch._C``, ``torch._dynamo``, ``torch.nn.modules._x``...) change
without notice, and some fail silently; see DESIGN.md, "Public torch only".
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("rnnzoo", "plugins")

#: ``torch._x``, ``torch.nn._x``, ``import torch._x``, ``from torch._x import y``,
#: and ``getattr(torch, "_x")`` / ``getattr(torch.nn, '_x')``
PRIVATE = re.compile(
    r"\btorch(?:\.\w+)*?\._[A-Za-z]" r"|\bgetattr\(\s*torch(?:\.\w+)*\s*,\s*[\"']_[A-Za-z]"
)


def private_uses(source: str) -> list[int]:
    """Line numbers of ``source`` that use a private torch name."""
    lines = {n for n, line in enumerate(source.splitlines(), 1) if PRIVATE.search(line)}
    for node in ast.walk(ast.parse(source)):
        # `from torch import _x` and `from torch.nn import (a,\n _x)`
        if (
            isinstance(node, ast.ImportFrom)
            and (node.module or "").split(".")[0] == "torch"
            and any(re.match(r"_[A-Za-z]", alias.name) for alias in node.names)
        ):
            lines.add(node.lineno)
    return sorted(lines)


@pytest.mark.parametrize(
    "source",
    [
        "torch._C._current_graph_task_id()",
        "x = torch._dynamo.is_compiling()",
        "from torch.autograd import forward_ad\nlevel = torch.autograd.forward_ad._current_level",
        "import torch._dynamo",
        "from torch._functorch import vmap",
        "from torch import _C",
        "from torch.nn import (\n    Linear,\n    _reduction,\n)",
        "f = getattr(torch, '_foreach_add')",
        'f = getattr(torch._C, "x")',
        'f = getattr(torch.nn.functional, "_pad")',
    ],
)
def test_the_check_finds_private_uses(source: str) -> None:
    assert private_uses(source), source


@pytest.mark.parametrize(
    "source",
    [
        "print(torch.__version__)",
        "y = torch.func.functional_call(m, p, (x,))",
        "from torch.nn.utils.rnn import pack_padded_sequence",
        "from torch import Tensor, nn",
        "getattr(torch.compiler, 'is_compiling')",
        "my_torch._private = 1",
    ],
)
def test_the_check_leaves_public_uses_alone(source: str) -> None:
    assert private_uses(source) == []


def test_no_private_torch_api_in_rnnzoo_or_plugins() -> None:
    files = sorted(path for folder in SCANNED for path in (ROOT / folder).rglob("*.py"))
    assert len(files) > 20, "the scan should see the whole package and its plugins"
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in files
        for line in private_uses(path.read_text(encoding="utf-8"))
    ]
    assert not found, "private torch APIs used at " + ", ".join(found)
