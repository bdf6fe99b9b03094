"""The docs claim only what exists (helpers in doc_claims.py).

README.md and docs/*.md are read as a user reads them: every config key they
mention exists in the schema or is a parameter of a registered component; every
``rnnzoo`` command they show has ``rnnzoo COMMAND --help``, run through the
console script; every plugin file they show loads, and its components count as
registered (the docs use them); the configuration reference lists every key of
the schema, with its default.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from doc_claims import (
    DOCS,
    MISTAKES,
    ROOT,
    RUN_ATTRIBUTES,
    Mention,
    as_key,
    command_lines,
    key_problem,
    mentions,
    param_names,
    parse_command,
    plugin_files,
    reference_rows,
    schema_keys,
)
from omegaconf import OmegaConf

from rnnzoo import config
from rnnzoo.config import ExperimentConfig
from rnnzoo.events import TrainingRun
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer

RNNZOO = Path(sys.executable).with_name("rnnzoo")


@pytest.fixture(scope="module")
def shown_plugins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return plugin_files(tmp_path_factory.mktemp("doc_plugins"))


@pytest.fixture(scope="module")
def registry(shown_plugins: dict[str, Path]) -> Registry:
    """The built-ins and installed plugins, and every plugin file the docs show."""
    return Registry(plugin_manager([str(p) for p in shown_plugins.values()]))


def test_the_docs_show_plugin_files_and_they_load(
    shown_plugins: dict[str, Path], registry: Registry
) -> None:
    assert {"my_cell.py", "leaky_cell.py", "softsign.py", "runs_table.py"} <= set(shown_plugins)
    assert {"mycell", "leaky"} <= set(registry.names("cell"))
    assert "leak_init" in param_names(registry, "cell", "leaky")


def test_every_config_key_in_the_docs_exists(registry: Registry) -> None:
    found = [m for path in DOCS for m in mentions(path)]
    # the extraction finds the three kinds of mention, in every kind of section
    keys = {m.key for m in found}
    assert {"trainer.steps", "model.fused", "controllers.clip_norm.max_norm"} <= keys
    assert {"model.cell_args.leak_init", "task.length", "controllers.grad_noise.std"} <= keys
    assert keys >= MISTAKES, "a listed mistake is no longer in the docs: drop it from MISTAKES"
    problems = sorted(
        {
            f"{m.doc}: {m.key}: {problem}"
            for m in found
            if m.key not in MISTAKES | RUN_ATTRIBUTES and (problem := key_problem(m, registry))
        }
    )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("key", "chosen", "problem"),
    [
        ("trainer.stepz", (), "'trainer.stepz' is not in the config schema"),
        ("model.cell_args.leak_nit", (), "no cell"),
        ("model.cell_args.leak_init", (("model.cell", "lstm"),), "no cell (lstm) takes"),
        ("controllers.clip_nrm.max_norm", (), "no controller is called 'clip_nrm'"),
        ("controllers.clip_norm.max_value", (), "controller 'clip_norm' takes no"),
        ("task.lenght", (), "no task"),
        ("trainer.steps.every", (), "'trainer.steps' is a int: it has no key 'every'"),
        ("optimizer.lr", (), None),  # not a section: not read as a key at all
    ],
)
def test_a_key_that_does_not_exist_is_caught(
    registry: Registry, key: str, chosen: tuple[tuple[str, str], ...], problem: str | None
) -> None:
    if problem is None:
        assert as_key(key) is None
        return
    assert as_key(key) == (key, "")
    found = key_problem(Mention("doc", key, chosen), registry)
    assert found is not None and problem in found, found


def test_mentions_are_read_from_spans_commands_and_yaml(tmp_path: Path) -> None:
    doc = tmp_path / "page.md"
    doc.write_text(
        "Set `trainer.steps` or `gradflow.jsonl`; `rnnzoo.recurrence` is a module.\n\n"
        "```bash\nrnnzoo train exp.yaml model.cell=leaky \\\n    model.cell_args.leak_init=2"
        "  # comment model.dropout=1\n```\n\n"
        "```yaml\nmodel: {cell: gru, hidden_size: 8}\ntask: {name: adding, length: 5}\n```\n",
        encoding="utf-8",
    )
    found = list(mentions(doc, root=tmp_path))
    leaky = (("model.cell", "leaky"),)
    assert found == [
        Mention("page.md", "trainer.steps"),
        Mention("page.md", "model.cell", leaky),
        Mention("page.md", "model.cell_args.leak_init", leaky),
        Mention("page.md", "model.cell", (("task.name", "adding"), ("model.cell", "gru"))),
        Mention("page.md", "model.hidden_size", (("task.name", "adding"), ("model.cell", "gru"))),
        Mention("page.md", "task.name", (("task.name", "adding"), ("model.cell", "gru"))),
        Mention("page.md", "task.length", (("task.name", "adding"), ("model.cell", "gru"))),
    ]


def test_every_rnnzoo_command_in_the_docs_exists(shown_plugins: dict[str, Path]) -> None:
    """``rnnzoo [-p FILE] COMMAND --help`` for each command shown, through the
    console script; ``-p`` files the docs show are loaded, others are left out."""
    assert RNNZOO.is_file(), f"no console script at {RNNZOO}: pip install -e ."
    shown: dict[str, list[str]] = {}  # command -> where it is shown
    plugins: dict[str, set[str]] = {}  # command -> the -p files shown with it
    for path in DOCS:
        for line in command_lines(path):
            files, command = parse_command(line)
            if command is not None:
                shown.setdefault(command, []).append(f"{path.name}: {line}")
                known = {str(shown_plugins[f]) for f in files if f in shown_plugins}
                plugins.setdefault(command, set()).update(known)
    assert {"train", "eval", "describe", "list", "config", "gradflow", "runs"} <= set(shown)
    runs = {
        command: subprocess.Popen(
            [str(RNNZOO), *(a for f in sorted(plugins[command]) for a in ("-p", f))]
            + [command, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for command in shown
    }
    failed = []
    for command, process in runs.items():
        out, _ = process.communicate(timeout=300)
        if process.returncode != 0 or "Usage:" not in out:
            failed.append(f"rnnzoo {command} --help: {out.strip()[-300:]}")
            failed += [f"  shown in {where}" for where in shown[command]]
    assert not failed, "\n".join(failed)


def test_run_attributes_named_in_the_docs_exist(tmp_path: Path, registry: Registry) -> None:
    """What writing-a-plugin.md says event hooks get is in the contract
    (rnnzoo.events.TrainingRun) and on the object a real trainer hands them."""
    quiet = ["tracking.wandb_mode=disabled", "trainer.progress=false", "task.length=4"]
    view = Trainer(config.load(None, quiet), registry, tmp_path / "run").view
    text = (ROOT / "docs" / "writing-a-plugin.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(run\.[a-z_]+)", text))
    assert named == RUN_ATTRIBUTES
    for key in RUN_ATTRIBUTES:
        name = key.split(".", 1)[1]
        assert hasattr(TrainingRun, name) and hasattr(view, name), key


def test_the_configuration_reference_lists_every_key_with_its_default() -> None:
    rows = reference_rows(ROOT / "docs" / "configuration.md")
    assert set(rows) == set(schema_keys())
    defaults = OmegaConf.to_container(OmegaConf.structured(ExperimentConfig))
    for key, shown in rows.items():
        value = defaults
        for part in key.split("."):
            value = value[part]  # type: ignore[index]
        if shown:  # a section's row has no default of its own
            assert yaml.safe_load(shown) == value, key
