"""The shape of the package: contract modules stand alone, modules stay small, the
training loop reads on one screen, and ``python -m rnnzoo`` is the CLI."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

from rnnzoo.training.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rnnzoo"
#: the plugin contract: what a plugin author reads and imports
CONTRACT = {"hookspecs", "cell", "head", "task", "controller", "activation", "events"}
MAX_MODULE_LINES = 300
MAX_LOOP_LINES = 150


def rnnzoo_imports(path: Path) -> set[str]:
    """The rnnzoo modules ``path`` imports, at run time or for type checking."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("rnnzoo.")}
    return found


def test_contract_modules_import_only_the_contract() -> None:
    for name in sorted(CONTRACT):
        outside = rnnzoo_imports(PACKAGE / f"{name}.py") - CONTRACT
        assert not outside, f"rnnzoo/{name}.py imports {sorted(outside)}"


def test_the_check_sees_imports_under_type_checking(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from rnnzoo.training.loop import Trainer\nimport rnnzoo.cell\n"
    )
    assert rnnzoo_imports(module) == {"training", "cell"}


def test_every_module_is_small() -> None:
    sizes = {
        str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    large = {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not large, f"modules over {MAX_MODULE_LINES} lines: {large}"


def test_the_training_loop_fits_on_a_screen() -> None:
    lines = len(inspect.getsource(Trainer.fit).splitlines())
    assert lines <= MAX_LOOP_LINES, f"Trainer.fit has {lines} lines"


def test_python_dash_m_rnnzoo_is_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rnnzoo", "list", "cells"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("cells:\n") and "  lstm " in result.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "rnnzoo", "describe", "lstn"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "Did you mean 'lstm'?" in bad.stderr
