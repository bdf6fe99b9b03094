"""The plugin contract through the real CLI: entry points, -p files, YAML plugins,
and the errors a broken or clashing plugin produces."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_run import require_example_plugin, rnnzoo, write

ROOT = Path(__file__).resolve().parents[1]

CELL_PLUGIN = """
    from typing import Literal

    from rnnzoo import hookimpl
    from rnnzoo_plugins.cells.elman import ElmanCell


    class TwinCell(ElmanCell):
        \"\"\"An Elman cell under another name, for tests.\"\"\"

        def __init__(
            self,
            input_size: int,
            hidden_size: int,
            activation,
            depth: int,
            mode: Literal["a", "b"] = "a",
            scale: float | None = None,
        ) -> None:
            super().__init__(input_size, hidden_size, activation)


    @hookimpl
    def rnnzoo_cells():
        return {"NAME": TwinCell}
"""


def cell_plugin(path: Path, name: str = "twin") -> Path:
    return write(path, CELL_PLUGIN.replace("NAME", name))


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RNNZOO_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("RNNZOO_TRACE_PLUGINS", raising=False)


# -- the installed example plugin ---------------------------------------------


def test_entry_point_cell_is_listed_and_described() -> None:
    require_example_plugin()
    listed = rnnzoo("list", "cells")
    assert listed.code == 0, listed.output
    row = next(line for line in listed.out.splitlines() if line.split()[:1] == ["example_leaky"])
    assert "Leaky gated cell" in row and row.endswith("[example]")

    described = rnnzoo("describe", "example_leaky")
    assert described.code == 0, described.output
    text = described.out
    assert text.startswith("example_leaky (cell)\n")
    assert "plugin: example (entry point 'example' of rnnzoo-example-plugin" in text
    assert "one gate f decides how" in text
    assert "  gate_bias: float (default 0.0)" in text
    # arguments rnnzoo supplies itself are not settings
    assert "input_size" not in text and "hidden_size" not in text


def test_plugins_command_says_where_each_plugin_comes_from(tmp_path: Path) -> None:
    require_example_plugin()
    plugin = cell_plugin(tmp_path / "twin.py")
    result = rnnzoo("plugins", "-p", plugin)
    assert result.code == 0, result.output
    rows = {line.split()[0]: line for line in result.out.splitlines()}
    assert "built-in" in rows["rnnzoo_plugins.cells.lstm"]
    assert rows["rnnzoo_plugins.cells.lstm"].rstrip().endswith("lstm.py")
    assert "entry point 'example' of rnnzoo-example-plugin" in rows["example"]
    assert str(plugin.resolve()) in rows[str(plugin)]


def test_disable_autoload_hides_the_entry_point_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    require_example_plugin()
    monkeypatch.setenv("RNNZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    listed = rnnzoo("list", "cells")
    assert listed.code == 0
    assert "example_leaky" not in listed.out and "lstm" in listed.out
    assert "example" not in rnnzoo("plugins").out
    described = rnnzoo("describe", "example_leaky")
    assert described.code == 2
    assert "No component is called 'example_leaky'" in described.err


def test_trace_prints_registrations_and_hook_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    quiet = rnnzoo("list", "cells")
    assert "rnnzoo_cells" not in quiet.err
    monkeypatch.setenv("RNNZOO_TRACE_PLUGINS", "1")
    traced = rnnzoo("list", "cells")
    assert traced.code == 0
    assert "rnnzoo_plugins.cells.lstm from built-in [register]" in traced.err
    assert "rnnzoo_cells from rnnzoo_plugins.cells.lstm --> ['lstm'] [hook]" in traced.err
    assert "rnnzoo_add_commands [hook]" in traced.err
    assert "lstm" in traced.out and "[hook]" not in traced.out


# -- plugins the user names ---------------------------------------------------


def test_plugin_file_with_p_is_listed_and_described(tmp_path: Path) -> None:
    plugin = cell_plugin(tmp_path / "twin.py")
    listed = rnnzoo("-p", plugin, "list", "cells")
    assert listed.code == 0, listed.output
    assert any(line.split()[:1] == ["twin"] for line in listed.out.splitlines())
    assert f"[{plugin}]" in listed.out

    # -p after the command works too
    described = rnnzoo("describe", "twin", "-p", plugin)
    assert described.code == 0, described.output
    assert "  depth: int (required)" in described.out
    assert "  mode: 'a' | 'b' (default 'a')" in described.out
    assert "  scale: float | None (default None)" in described.out
    assert "activation:" not in described.out


def test_plugin_named_in_experiment_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cell_plugin(tmp_path / "exp" / "twin.py")
    experiment = write(
        tmp_path / "exp" / "twin.yaml",
        """
        plugins: [twin.py]   # beside this file
        task: {name: adding, length: 12}
        model: {cell: twin, cell_args: {depth: 2}}
        """,
    )
    monkeypatch.chdir(tmp_path)  # not the YAML's folder
    result = rnnzoo("config", experiment, "model.cell_args.mode=b")
    assert result.code == 0, result.output
    assert str((tmp_path / "exp" / "twin.py").resolve()) in result.out

    wrong = rnnzoo("config", experiment, "model.cell_args.mode=c")
    assert wrong.code == 2
    assert "'model.cell_args.mode' must be 'a' | 'b'" in wrong.err


def test_plugin_file_adds_a_command(tmp_path: Path) -> None:
    plugin = write(
        tmp_path / "hello.py",
        """
        import click
        from rnnzoo import hookimpl


        @hookimpl
        def rnnzoo_add_commands(cli):
            @cli.command()
            @click.argument("who")
            @click.option("--shout", is_flag=True)
            def hello(who, shout):
                \"\"\"Greet WHO.\"\"\"
                text = f"hello {who}"
                click.echo(text.upper() if shout else text)
        """,
    )
    result = rnnzoo("-p", plugin, "hello", "world", "--shout")
    assert result.code == 0, result.output
    assert result.out == "HELLO WORLD\n"
    assert "Greet WHO." in rnnzoo("-p", plugin, "--help").out
    # the command belongs to that invocation only
    missing = rnnzoo("hello", "world")
    assert missing.code == 2 and "No such command 'hello'" in missing.err


def test_same_plugin_file_twice_is_loaded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell_plugin(tmp_path / "twin.py")
    monkeypatch.chdir(tmp_path)
    result = rnnzoo("-p", "twin.py", "-p", "./twin.py", "list", "cells")
    assert result.code == 0, result.output
    assert result.out.count("twin ") == 1


# -- errors --------------------------------------------------------------------


def assert_usage_error(result, *fragments: str) -> None:
    assert result.code == 2, result.output
    assert result.out == ""
    assert result.err.startswith("Error: ")
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in result.err, result.err


def test_duplicate_name_between_two_plugin_files(tmp_path: Path) -> None:
    first = cell_plugin(tmp_path / "one.py")
    second = cell_plugin(tmp_path / "two.py")
    result = rnnzoo("-p", first, "-p", second, "list", "cells")
    assert_usage_error(result, "Two plugins register the cell 'twin'", f"'{first}'", f"'{second}'")


def test_duplicate_name_with_a_built_in(tmp_path: Path) -> None:
    plugin = cell_plugin(tmp_path / "mine.py", name="lstm")
    result = rnnzoo("-p", plugin, "describe", "lstm")
    assert_usage_error(
        result,
        "Two plugins register the cell 'lstm'",
        "'rnnzoo_plugins.cells.lstm' (built-in)",
        f"'{plugin}'",
    )


def test_duplicate_name_with_the_entry_point_plugin(tmp_path: Path) -> None:
    require_example_plugin()
    plugin = cell_plugin(tmp_path / "mine.py", name="example_leaky")
    result = rnnzoo("-p", plugin, "list")
    assert_usage_error(
        result,
        "Two plugins register the cell 'example_leaky'",
        "'example' (entry point 'example' of rnnzoo-example-plugin",
        f"'{plugin}'",
    )


def test_plugin_that_fails_to_import(tmp_path: Path) -> None:
    plugin = write(tmp_path / "broken.py", "import rnnzoo_no_such_module_xyz\n")
    result = rnnzoo("-p", plugin, "list")
    assert_usage_error(
        result,
        f"Plugin '{plugin}' failed to import",
        "ModuleNotFoundError: No module named 'rnnzoo_no_such_module_xyz'",
    )
    debug = rnnzoo("--debug", "-p", plugin, "list")
    assert debug.code == 2
    assert "Traceback (most recent call last)" in debug.err
    assert 'broken.py", line 1' in debug.err


def test_plugin_module_or_file_that_does_not_exist(tmp_path: Path) -> None:
    assert_usage_error(
        rnnzoo("-p", "rnnzoo_no_such_plugin_xyz", "list"),
        "Plugin 'rnnzoo_no_such_plugin_xyz' failed to import",
    )
    missing = tmp_path / "missing.py"
    assert_usage_error(rnnzoo("-p", missing, "list"), f"Plugin file '{missing}' does not exist")


def test_entry_point_plugin_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real installed distribution, found by importlib.metadata on sys.path
    dist = tmp_path / "rnnzoo_broken_plugin-1.0.dist-info"
    write(dist / "METADATA", "Metadata-Version: 2.1\nName: rnnzoo-broken-plugin\nVersion: 1.0\n")
    write(dist / "entry_points.txt", "[rnnzoo]\nbroken = rnnzoo_broken_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert_usage_error(
        rnnzoo("list"),
        "Plugin 'broken' (entry point 'broken' of rnnzoo-broken-plugin 1.0) failed to import",
        "No module named 'rnnzoo_broken_xyz'",
        "RNNZOO_DISABLE_PLUGIN_AUTOLOAD=1",
    )
    monkeypatch.setenv("RNNZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert rnnzoo("list").code == 0


def test_hook_with_a_parameter_the_spec_lacks(tmp_path: Path) -> None:
    plugin = write(
        tmp_path / "badsig.py",
        """
        from rnnzoo import hookimpl


        @hookimpl
        def rnnzoo_step_end(run, step, metrics, optimizer):
            pass
        """,
    )
    assert_usage_error(
        rnnzoo("-p", plugin, "list"),
        f"Plugin '{plugin}'",
        "rnnzoo_step_end(run, step, metrics, optimizer)",
        "{'optimizer'}",
        "rnnzoo calls rnnzoo_step_end(run, step, metrics)",
    )


def test_hook_with_an_unknown_name(tmp_path: Path) -> None:
    plugin = write(
        tmp_path / "typo.py",
        """
        from rnnzoo import hookimpl


        @hookimpl
        def rnnzoo_cell():
            return {}
        """,
    )
    assert_usage_error(
        rnnzoo("-p", plugin, "list"),
        f"Plugin '{plugin}'",
        "implements 'rnnzoo_cell', which is not an rnnzoo hook",
        "Did you mean 'rnnzoo_cells'?",
    )


def test_registration_hook_that_breaks_the_contract(tmp_path: Path) -> None:
    not_a_dict = write(
        tmp_path / "listy.py",
        """
        from rnnzoo import hookimpl


        @hookimpl
        def rnnzoo_heads():
            return ["head"]
        """,
    )
    assert_usage_error(
        rnnzoo("-p", not_a_dict, "list"),
        f"Plugin '{not_a_dict}' returned list from rnnzoo_heads",
    )
    raising = write(
        tmp_path / "raising.py",
        """
        from rnnzoo import hookimpl


        @hookimpl
        def rnnzoo_tasks():
            raise RuntimeError("no data today")
        """,
    )
    assert_usage_error(
        rnnzoo("-p", raising, "list"),
        f"Plugin '{raising}'",
        "failed in rnnzoo_tasks: RuntimeError: no data today",
    )


# -- the plugin guide's examples run as written ----------------------------------


def test_examples_of_the_plugin_guide(tmp_path: Path) -> None:
    guide = (ROOT / "docs" / "writing-a-plugin.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:python|yaml)\n# (\w+\.(?:py|yaml))\n(.*?)```", guide, re.DOTALL)
    files = {name: write(tmp_path / "guide" / name, body) for name, body in blocks}
    assert {"leaky_cell.py", "sign.yaml", "runs_table.py"} <= set(files)

    described = rnnzoo("-p", files["leaky_cell.py"], "describe", "leaky")
    assert described.code == 0, described.output
    assert described.out.startswith("leaky (cell)\n")
    assert "  leak_init: float (default 0.0)" in described.out

    # every plugin the experiment names loads, and every name in it resolves
    runs = tmp_path / "runs"
    result = rnnzoo(
        "train",
        files["sign.yaml"],
        "--run-dir",
        runs / "sign",
        "model.cell=leaky",
        "trainer.steps=3",
        "trainer.eval_every=3",
        "trainer.batch_size=4",
        "trainer.progress=false",
        "task.length=5",
        "task.val_size=8",
        "model.hidden_size=4",
        "gradflow.every=0",
        "tracking.wandb_mode=disabled",
    )
    assert result.code == 0, result.output
    assert "baseline/acc" in result.out
    assert len((runs / "sign" / "loss.csv").read_text().splitlines()) == 3
    logged = [json.loads(line) for line in (runs / "sign" / "metrics.jsonl").open()]
    assert [r["loss_log/rows"] for r in logged if "loss_log/rows" in r] == [1, 2, 3]

    table = rnnzoo("-p", files["runs_table.py"], "runs", runs, "--metric", "val/acc")
    assert table.code == 0, table.output
    assert table.out.split()[0] == "sign"
