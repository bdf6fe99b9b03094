"""Run the real ``rnnzoo`` entry point in-process and collect what it printed."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from rnnzoo.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err


def rnnzoo(*args: str | os.PathLike[str]) -> Result:
    """``rnnzoo ARGS`` through :func:`rnnzoo.cli.main`, as the console script runs it."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return Result(code, out.getvalue(), err.getvalue())


def write(path: Path, text: str) -> Path:
    """Write dedented ``text`` to ``path`` and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def require_example_plugin() -> None:
    """Skip unless the example plugin package is installed; under CI=true, fail."""
    names = {ep.name for ep in importlib.metadata.entry_points(group="rnnzoo")}
    if "example" in names:
        return
    reason = (
        "the example plugin is not installed: pip install ./tests/example_plugin "
        "(nox -s tests does)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)
