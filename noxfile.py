"""Sessions: tests (default), lint, typing, and bench (only when asked for)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

CONSTRAINTS = ("-c", "constraints.txt")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite, with the example plugin package installed via its entry point."""
    session.install(*CONSTRAINTS, "-e", ".[test]")
    session.install(*CONSTRAINTS, "./tests/example_plugin")
    session.run("pytest", "-q", *session.posargs, env={"WANDB_SILENT": "true"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy on the core package."""
    session.install(*CONSTRAINTS, "-e", ".", "mypy", "types-PyYAML")
    session.run("mypy", "rnnzoo")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Speed and memory benchmarks against torch.nn and a hand-written loop."""
    session.install(*CONSTRAINTS, "-e", ".")
    session.run("python", "benchmarks/run.py", *session.posargs)
