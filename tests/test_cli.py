"""The inspection commands and the entry point: list, describe, --version, exit codes."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import rnnzoo

import rnnzoo as package

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RNNZOO_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("RNNZOO_TRACE_PLUGINS", raising=False)


def names(out: str) -> list[str]:
    """The component names of ``rnnzoo list`` output (indented rows)."""
    return [line.split()[0] for line in out.splitlines() if line.startswith("  ")]


def test_version() -> None:
    result = rnnzoo("--version")
    assert result.code == 0
    assert result.out == f"rnnzoo, version {package.__version__}\n"
    assert package.__version__ == importlib.metadata.version("rnnzoo")


def test_help_lists_the_commands() -> None:
    result = rnnzoo("--help")
    assert result.code == 0
    for command in ("list", "describe", "plugins", "config", "train", "eval", "sample"):
        assert f"  {command} " in result.out


def test_list_every_kind_and_one_kind() -> None:
    everything = rnnzoo("list")
    assert everything.code == 0
    headers = [line for line in everything.out.splitlines() if not line.startswith(" ")]
    assert headers == ["activations:", "cells:", "controllers:", "heads:", "tasks:"]
    cells = rnnzoo("list", "cells")
    assert cells.code == 0
    assert cells.out.startswith("cells:\n")
    assert {"elman", "lstm", "gru", "irnn"} <= set(names(cells.out))
    assert set(names(cells.out)) < set(names(everything.out))
    for line in cells.out.splitlines()[1:]:
        assert line.rstrip().endswith("]")  # [plugin of origin]
        assert len(line) < 160


def test_list_filter_glob() -> None:
    result = rnnzoo("list", "--filter", "clip_*")
    assert result.code == 0
    listed = names(result.out)
    assert {"clip_norm", "clip_value"} <= set(listed)
    assert all(name.startswith("clip_") for name in listed)
    assert [line for line in result.out.splitlines() if not line.startswith(" ")] == [
        "controllers:"
    ]
    assert names(rnnzoo("list", "activations", "--filter", "*relu").out) == [
        "leaky_relu",
        "relu",
    ]
    nothing = rnnzoo("list", "--filter", "zz*")
    assert nothing.code == 0 and nothing.out == ""
    assert "Nothing matches 'zz*'" in nothing.err


def test_list_unknown_kind_is_a_usage_error() -> None:
    result = rnnzoo("list", "cell")
    assert result.code == 2
    assert "'cell' is not one of" in result.err


def test_describe_built_in() -> None:
    result = rnnzoo("describe", "lstm")
    assert result.code == 0, result.output
    lines = result.out.splitlines()
    assert lines[0] == "lstm (cell)"
    assert lines[1] == "plugin: rnnzoo_plugins.cells.lstm (built-in)"
    assert "LSTM" in lines[3]
    params = lines[lines.index("parameters:") + 1 :]
    assert params and all(": " in p and "default" in p for p in params)


def test_describe_controller_and_task_parameters() -> None:
    clip = rnnzoo("describe", "clip_norm")
    assert clip.code == 0
    assert "clip_norm (controller)" in clip.out
    assert "  max_norm: float (default" in clip.out
    task = rnnzoo("describe", "adding")
    assert "adding (task)" in task.out
    assert "  length: int (default 50)" in task.out
    assert "seed" not in task.out.split("parameters:")[1]  # supplied by rnnzoo


def test_describe_unknown_name_suggests() -> None:
    result = rnnzoo("describe", "lstn")
    assert result.code == 2
    assert result.err == (
        "Error: No component is called 'lstn'. Did you mean 'lstm'? (see: rnnzoo list)\n"
    )


def test_config_error_without_and_with_debug() -> None:
    plain = rnnzoo("config", ROOT / "experiments/adding.yaml", "model.cell=lstn")
    assert plain.code == 2
    assert "Traceback" not in plain.err
    debug = rnnzoo("--debug", "config", ROOT / "experiments/adding.yaml", "model.cell=lstn")
    assert debug.code == 2
    assert "Traceback (most recent call last)" in debug.err
    assert "rnnzoo.errors.UsageError: Unknown cell 'lstn'" in debug.err


def test_console_script() -> None:
    """The installed ``rnnzoo`` script: one real process, error path and exit code."""
    script = shutil.which("rnnzoo", path=str(Path(sys.executable).parent)) or "rnnzoo"
    proc = subprocess.run(
        [script, "config", "experiments/adding.yaml", "--model.cell", "lstn"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "RNNZOO_DISABLE_PLUGIN_AUTOLOAD": "1"},
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "Error: Unknown cell 'lstn'. Did you mean 'lstm'? (see: rnnzoo list cells)\n"
    )


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("tanh", "g'(z) lies in [0, 1]: the activation never amplifies the gradient"),
        ("sigmoid", "g'(z) lies in [0, 0.25]: the activation shrinks the gradient"),
    ],
)
def test_describe_an_activation_says_what_it_does_to_the_gradient(name: str, says: str) -> None:
    result = rnnzoo("describe", name)
    assert result.code == 0, result.output
    assert f"gradient flow (default settings): {says}" in result.out


def test_describe_says_when_an_activation_can_amplify(tmp_path: Path) -> None:
    plugin = tmp_path / "steep.py"
    plugin.write_text(
        "import torch\nfrom rnnzoo import Activation, hookimpl\n\n"
        "class Steep(Activation):\n    derivative_range = (0.0, 2.0)\n"
        "    def function(self, z):\n        return 2 * torch.tanh(z)\n\n"
        "@hookimpl\ndef rnnzoo_activations():\n    return {'steep': Steep}\n"
    )
    result = rnnzoo("-p", plugin, "describe", "steep")
    assert result.code == 0, result.output
    assert "g'(z) lies in [0, 2]: it can exceed 1" in result.out


def colored(*args: str) -> tuple[str, str]:
    """``rnnzoo ARGS`` with click's colour forced on, as on a terminal: stdout, stderr."""
    from click.testing import CliRunner

    from rnnzoo.cli import main

    with CliRunner().isolation(color=True) as (out, err, _):
        with contextlib.suppress(SystemExit):
            main(list(args))
        return out.getvalue().decode(), err.getvalue().decode()


@pytest.mark.parametrize("no_color", ["", "1", "false"])
def test_no_color_turns_ansi_codes_off_even_on_a_terminal(
    no_color: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_COLOR set to any non-empty value (https://no-color.org) leaves out every
    ANSI code: in the one-paragraph error and in a command's own output."""
    monkeypatch.setenv("RNNZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("NO_COLOR", no_color)
    listing, _ = colored("list", "cells")
    _, error = colored("describe", "lstn")
    assert "lstm" in listing
    assert "Error: No component is called 'lstn'" in error
    assert ("\x1b[" in listing + error) == (no_color == ""), (listing, error)
