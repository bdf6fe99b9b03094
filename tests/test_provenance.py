"""rnnzoo.provenance: where each component of a run came from, and an unknown
name in a stored run that names the package to install."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import require_example_plugin, write

from rnnzoo import __version__, config
from rnnzoo.errors import UsageError
from rnnzoo.plugins import plugin_manager
from rnnzoo.provenance import (
    SOURCES_FILE,
    changed_sources,
    component_sources,
    parse_source,
    recorded_sources,
    require_components,
)
from rnnzoo.registry import Registry

CELL_FILE = """
from torch import nn
from rnnzoo import Cell, hookimpl


class Tiny(Cell):
    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.w = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x_t, state):
        h = self.w(__import__("torch").cat([x_t, state[0]], -1)).tanh()
        return h, (h,)


@hookimpl
def rnnzoo_cells():
    return {"tiny": Tiny}
"""


def example_cell(registry: Registry) -> str:
    return next(c.name for c in registry.components("cell") if c.plugin == "example")


def test_built_in_components_come_from_rnnzoo() -> None:
    cfg = config.load(None, ["model.cell=lstm", "controllers.clip_norm.max_norm=1.0"])
    sources = component_sources(cfg, Registry(plugin_manager()))
    assert sources["cell"] == f"rnnzoo {__version__} (built-in rnnzoo_plugins.cells.lstm)"
    assert sources["activation"] == f"rnnzoo {__version__} (built-in rnnzoo_plugins.activations)"
    assert sources["task"].endswith("(built-in rnnzoo_plugins.tasks.synthetic)")
    assert sources["head"].endswith("(built-in rnnzoo_plugins.heads.sequence)")
    assert sources["controllers.clip_norm"].startswith(f"rnnzoo {__version__} (built-in ")
    assert parse_source(sources["cell"]).distribution == "rnnzoo"


def test_a_cell_that_takes_no_activation_records_none() -> None:
    cfg = config.load(None, ["model.cell=irnn"])
    assert "activation" not in component_sources(cfg, Registry(plugin_manager()))


def test_an_installed_plugin_names_its_distribution_and_is_asked_for_when_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_example_plugin()
    registry = Registry(plugin_manager())
    cell = example_cell(registry)
    cfg = config.load(None, [f"model.cell={cell}"])
    sources = component_sources(cfg, registry)
    assert sources["cell"] == "rnnzoo-example-plugin 0.1.0 (entry point 'example')"
    require_components(cfg, registry, sources)  # everything is there: no error

    monkeypatch.setenv("RNNZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    without = Registry(plugin_manager())
    with pytest.raises(UsageError) as caught:
        require_components(cfg, without, sources)
    assert str(caught.value).startswith(
        f"Cell '{cell}' came from package 'rnnzoo-example-plugin' 0.1.0 (entry point "
        "'example'); pip install 'rnnzoo-example-plugin==0.1.0'."
    )


def test_a_plugin_file_is_recorded_with_its_hash_and_asked_for_when_missing(
    tmp_path: Path,
) -> None:
    plugin = write(tmp_path / "tiny_cell.py", CELL_FILE)
    registry = Registry(plugin_manager([str(plugin)]))
    cfg = config.load(None, ["model.cell=tiny"])
    sources = component_sources(cfg, registry)
    source = parse_source(sources["cell"])
    assert source.file == str(plugin.resolve()) and source.version.startswith("sha256:")
    assert len(source.version) == len("sha256:") + 12

    plugin.write_text(CELL_FILE + "\n# edited\n")
    edited = component_sources(cfg, Registry(plugin_manager([str(plugin)])))
    assert changed_sources(sources, edited) == [
        f"cell: the run used {sources['cell']}, now {edited['cell']}"
    ]
    with pytest.raises(UsageError, match=f"came from the plugin file {plugin.resolve()}; pass"):
        require_components(cfg, Registry(plugin_manager()), sources)


def test_recorded_sources_reads_the_run_folder(tmp_path: Path) -> None:
    assert recorded_sources(tmp_path) == {}
    (tmp_path / SOURCES_FILE).write_text(json.dumps({"cell": "rnnzoo-foo 1.2 (entry point 'foo')"}))
    assert recorded_sources(tmp_path) == {"cell": "rnnzoo-foo 1.2 (entry point 'foo')"}
    (tmp_path / SOURCES_FILE).write_text("[not a dict")
    assert recorded_sources(tmp_path) == {}


def test_an_unknown_name_without_a_record_keeps_the_usual_error() -> None:
    cfg = config.load(None, ["model.cell=lstn"])
    registry = Registry(plugin_manager())
    require_components(cfg, registry, {})  # nothing recorded: nothing to add
    with pytest.raises(UsageError, match="Did you mean 'lstm'"):
        registry.get("cell", "lstn")


def test_a_run_records_its_sources_and_eval_without_the_package_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the CLI: the run writes sources.json (and the W&B config); with the
    plugin package gone, `eval` and `train --resume` say which package to install."""
    from cli_run import rnnzoo

    require_example_plugin()
    registry = Registry(plugin_manager())
    cell = example_cell(registry)
    run = tmp_path / "run"
    result = rnnzoo(
        "train", Path(__file__).resolve().parents[1] / "experiments" / "adding.yaml",
        f"model.cell={cell}", "task.length=5", "task.val_size=8", "model.hidden_size=4",
        "trainer.steps=2", "trainer.batch_size=4", "trainer.progress=false",
        "gradflow.every=0", "tracking.wandb_mode=disabled", "--run-dir", run,
    )  # fmt: skip
    assert result.code == 0, result.output
    sources = json.loads((run / SOURCES_FILE).read_text())
    assert sources["cell"].startswith("rnnzoo-example-plugin ")
    monkeypatch.setenv("RNNZOO_DISABLE_PLUGIN_AUTOLOAD", "1")  # as if uninstalled
    for command in (["eval", run], ["train", "--resume", run, "trainer.steps=4"]):
        missing = rnnzoo(*command)
        assert missing.code == 2, missing.output
        assert "came from package 'rnnzoo-example-plugin'" in missing.err
        assert "pip install" in missing.err
