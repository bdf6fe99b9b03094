"""Files rnnzoo reads cannot run code: checkpoints load with ``weights_only=True``,
configs are plain YAML with omegaconf's built-in resolvers only, and plugins come
only from installed entry points or paths the user names."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_run import rnnzoo, write
from omegaconf import OmegaConf
from omegaconf.basecontainer import BaseContainer
from wandb_records import read_run, run_files

from rnnzoo import checkpoint
from rnnzoo.plugins import plugin_manager

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"
SMALL = (
    "task.length=6",
    "task.val_size=16",
    "model.hidden_size=4",
    "trainer.steps=4",
    "trainer.batch_size=4",
    "trainer.checkpoint_every=2",
    "trainer.progress=false",
    "gradflow.every=0",
    "tracking.wandb_mode=disabled",
)
#: the resolvers omegaconf itself registers; none of them evaluates code
OMEGACONF_RESOLVERS = {
    "oc.coerce",
    "oc.create",
    "oc.decode",
    "oc.deprecated",
    "oc.dict.keys",
    "oc.dict.values",
    "oc.env",
    "oc.select",
}


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RNNZOO_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")


class Payload:
    """Unpickling this calls ``open(path, "w")``: it creates the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


# -- checkpoints -------------------------------------------------------------------


def test_checkpoint_with_a_pickle_payload_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert rnnzoo("train", ADDING, *SMALL, "--run-dir", run).code == 0
    latest = checkpoint.latest(run)
    marker = tmp_path / "pwned"
    state = torch.load(latest, weights_only=True)
    state["model"]["head.project.bias"] = Payload(marker)
    torch.save(state, latest)

    # the payload is live: an unguarded load creates the file
    torch.load(latest, weights_only=False)
    assert marker.exists()
    marker.unlink()

    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    for command in (
        ["train", "--resume", run, "trainer.steps=8"],
        ["eval", run],
        ["sample", run],
    ):
        result = rnnzoo(*command)
        assert result.code == 2, result.output
        assert "Traceback" not in result.output
        message = result.err.strip()
        assert message.startswith(f"Error: Checkpoint '{latest}' was refused")
        assert "GLOBAL io.open" in message
        assert "weights_only=True so that a file cannot run code" in message
        assert "weights_only` set to `False`" not in message  # torch's advice is left out
        assert not marker.exists()
    # the lock file only names the process that last held the folder
    after = {p.name: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    after.pop(".lock")
    before.pop(".lock")
    assert after == before, "a refused checkpoint changed the run folder"


def test_checkpoint_module_refuses_the_payload_too(tmp_path: Path) -> None:
    """The library call the CLI uses, directly: nothing but tensors and containers."""
    marker = tmp_path / "pwned"
    path = tmp_path / "ckpt-00000001.pt"
    torch.save({"step": 1, "model": {}, "extra": Payload(marker)}, path)
    with pytest.raises(checkpoint.CheckpointError, match="was refused"):
        checkpoint.load(path)
    assert not marker.exists()


# -- configs -----------------------------------------------------------------------


def test_no_resolver_beyond_omegaconf_built_ins() -> None:
    """Loading every plugin (built-ins and installed ones) registers no resolver
    that could evaluate code, e.g. ``${eval:...}``."""
    plugin_manager()
    registered = set(BaseContainer._resolvers)
    assert registered <= OMEGACONF_RESOLVERS, registered - OMEGACONF_RESOLVERS
    for name in ("eval", "python", "exec", "import", "call"):
        assert not OmegaConf.has_resolver(name)


def test_eval_interpolation_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    experiment = write(
        tmp_path / "evil.yaml",
        f"""
        tracking:
          name: ${{eval:"__import__('pathlib').Path('{marker}').touch()"}}
        """,
    )
    result = rnnzoo("config", experiment)
    assert result.code == 2, result.output
    assert "'tracking.name' cannot be resolved: Unsupported interpolation type eval" in result.err
    assert not marker.exists()


def test_environment_interpolation_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNZOO_TEST_RUN_NAME", "from-the-environment")
    result = rnnzoo("config", ADDING, "tracking.name=${oc.env:RNNZOO_TEST_RUN_NAME}")
    assert result.code == 0, result.output
    assert "name: from-the-environment" in result.out


def test_python_tags_in_the_experiment_file_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    experiment = write(
        tmp_path / "evil.yaml",
        f"""
        tracking:
          name: !!python/object/apply:builtins.open ["{marker}", "w"]
        """,
    )
    result = rnnzoo("train", experiment, *SMALL, "--run-dir", tmp_path / "run")
    assert result.code == 2, result.output
    assert "is not valid YAML: could not determine a constructor for the tag" in result.err
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


def test_python_tags_in_an_override_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    override = f'tracking.name=!!python/object/apply:builtins.open ["{marker}", "w"]'
    result = rnnzoo("config", ADDING, override)
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    assert "Cannot parse the override 'tracking.name=!!python/object" in result.err
    assert "could not determine a constructor for the tag" in result.err
    assert not marker.exists()


# -- plugins -----------------------------------------------------------------------

PLANTED = """
from pathlib import Path

from rnnzoo import hookimpl
from rnnzoo_plugins.cells.elman import ElmanCell

Path(__file__).with_suffix(".imported").touch()


@hookimpl
def rnnzoo_cells():
    return {"planted": ElmanCell}
"""


def test_plugins_load_only_from_entry_points_or_named_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python files lying in the working directory, beside the experiment or in a
    run folder are never imported unless named with -p or in ``plugins:``."""
    project = tmp_path / "project"
    experiment = project / "experiments" / "mine.yaml"
    write(experiment, "task: {name: adding, length: 6, val_size: 16}\n")
    planted = [
        write(project / name, PLANTED)
        for name in (
            "rnnzoo_plugin.py",
            "conftest.py",
            "plugins.py",
            "experiments/rnnzoo_plugin.py",
            "experiments/plugins.py",
        )
    ]
    monkeypatch.chdir(project)
    for command in (
        ["list", "cells"],
        ["config", experiment],
        ["train", experiment, *SMALL[2:], "--run-dir", project / "run"],
        ["eval", project / "run"],
    ):
        result = rnnzoo(*command)
        assert result.code == 0, result.output
        assert "planted" not in result.out
    run_files = project / "run" / "rnnzoo_plugin.py"
    shutil.copy(planted[0], run_files)
    assert rnnzoo("eval", project / "run").code == 0
    assert not list(project.rglob("*.imported")), "an unnamed file was imported"

    # named, the same file is a plugin: the test above would have seen it
    named = rnnzoo("-p", planted[0], "list", "cells")
    assert named.code == 0
    assert "planted" in named.out
    assert planted[0].with_suffix(".imported").exists()


def test_a_run_folder_names_its_plugins_in_its_config(tmp_path: Path) -> None:
    """The plugins an experiment lists are saved, as absolute paths, in the run's
    config.yaml, and eval loads exactly those: opening a run folder runs the
    plugin files its config.yaml names (see docs/reliability.md)."""
    plugin = write(tmp_path / "experiment" / "cell.py", PLANTED)
    experiment = write(
        tmp_path / "experiment" / "mine.yaml",
        "plugins: [cell.py]\nmodel: {cell: planted}\n",
    )
    run = tmp_path / "run"
    assert rnnzoo("train", experiment, *SMALL, "--run-dir", run).code == 0
    saved = OmegaConf.load(run / "config.yaml")
    assert list(saved.plugins) == [str(plugin.resolve())]
    assert rnnzoo("eval", run).code == 0  # the cell 'planted' exists only in that file
    assert json.loads((run / "eval.json").read_text())["step"] == 4


def test_a_plugin_path_relative_to_the_working_directory_is_saved_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``plugins: [relplug.py]`` found in the working directory (not beside the
    YAML), and the ``plugins=[...]`` override: config.yaml holds the absolute path,
    and eval from another folder, where another relplug.py lies, loads the one the
    run was trained with."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    original = write(project / "relplug.py", PLANTED)
    write(elsewhere / "relplug.py", PLANTED.replace('"planted"', '"impostor"'))
    experiment = write(
        tmp_path / "experiments" / "mine.yaml",
        "plugins: [relplug.py]\nmodel: {cell: planted}\n",
    )
    monkeypatch.chdir(project)
    runs = {"file": tmp_path / "run-file", "override": tmp_path / "run-override"}
    assert rnnzoo("train", experiment, *SMALL, "--run-dir", runs["file"]).code == 0
    result = rnnzoo(
        "train", ADDING, *SMALL, "plugins=[relplug.py]", "model.cell=planted",
        "--run-dir", runs["override"],
    )  # fmt: skip
    assert result.code == 0, result.output
    monkeypatch.chdir(elsewhere)
    for run in runs.values():
        assert list(OmegaConf.load(run / "config.yaml").plugins) == [str(original.resolve())]
        result = rnnzoo("eval", run)
        assert result.code == 0, result.output  # the cell 'planted' is only in the original
        assert json.loads((run / "eval.json").read_text())["step"] == 4
    assert not (elsewhere / "relplug.imported").exists()


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """Nine levels of nine aliases (9**9 strings once expanded, 324 bytes): refused
    while parsing, in a process that would otherwise run for minutes."""
    levels = "abcdefghi"
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n"
        for a, b in zip(levels[:-1], levels[1:], strict=True)
    )
    experiment = write(tmp_path / "bomb.yaml", bomb)

    def limit_memory() -> None:  # without the fix, fail fast instead of filling the machine
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    env = {**os.environ, "RNNZOO_DISABLE_PLUGIN_AUTOLOAD": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "rnnzoo", "config", str(experiment)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        preexec_fn=limit_memory,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"Error: Experiment file '{experiment}' at line 2, column 8")
    assert "rnnzoo refuses YAML aliases" in proc.stderr


TOKEN_TASK = """
from rnnzoo import hookimpl
from rnnzoo_plugins.tasks.synthetic import AddingTask


class TokenAdding(AddingTask):
    def __init__(
        self, seed: int = 0, length: int = 6, val_size: int = 16, token: str = "", header: str = ""
    ) -> None:
        super().__init__(seed, length, val_size)


@hookimpl
def rnnzoo_tasks():
    return {"token_adding": TokenAdding}
"""


def test_values_from_the_environment_are_never_written_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret passed as ${oc.env:SECRET_TOKEN}, and a value built from it, stay
    interpolations in config.yaml, the checkpoints and the W&B config; nothing in
    the run folder or the output holds the secret. eval resolves it again."""
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_SILENT", "true")
    plugin = write(tmp_path / "token_task.py", TOKEN_TASK)
    experiment = write(
        tmp_path / "secret.yaml",
        f"""
        plugins: [{plugin}]
        task:
          name: token_adding
          token: ${{oc.env:SECRET_TOKEN}}
          header: Bearer ${{.token}}
        trainer: {{eval_every: "${{trainer.steps}}"}}
        """,
    )
    run = tmp_path / "run"
    small = [s for s in SMALL if not s.startswith(("task.", "tracking."))]
    trained = rnnzoo("train", experiment, *small, "tracking.wandb_mode=offline", "--run-dir", run)
    assert trained.code == 0, trained.output
    evaluated = rnnzoo("eval", run)
    assert evaluated.code == 0, evaluated.output
    assert "hunter2" not in trained.output + evaluated.output

    saved = (run / "config.yaml").read_text(encoding="utf-8")
    assert "token: ${oc.env:SECRET_TOKEN}" in saved and "header: Bearer ${.token}" in saved
    stored = torch.load(checkpoint.latest(run), weights_only=True)
    assert "token: ${oc.env:SECRET_TOKEN}" in stored["config"]
    (wandb_file,) = run_files(run)
    wandb_config = read_run(wandb_file).config
    assert wandb_config["task.token"] == "${oc.env:SECRET_TOKEN}"
    assert wandb_config["task.header"] == "Bearer ${.token}"
    assert wandb_config["trainer.eval_every"] == 4  # what does not read the environment is resolved
    files = [p for p in run.rglob("*") if p.is_file()]
    assert {run / "config.yaml", run / "metrics.jsonl", wandb_file} <= set(files)
    assert [p for p in files if b"hunter2" in p.read_bytes()] == []

    monkeypatch.delenv("SECRET_TOKEN")
    missing = rnnzoo("eval", run)
    assert missing.code == 2, missing.output
    assert "'task.token' cannot be resolved" in missing.err and "SECRET_TOKEN" in missing.err
