"""W&B sweeps: the sweep file, every argument form a W&B agent writes, and the run
id an agent gives. No network here, so the agent's server loop cannot run; its
own code for one run (``Agent._command_run``: fill in the command, start the
process) does, with the run reporting offline."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import rnnzoo
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args, load_sweep_config
from wandb.wandb_agent import Agent
from wandb_records import read_run, run_files

from rnnzoo.errors import ConfigError, UsageError
from rnnzoo.overrides import normalize_overrides
from rnnzoo.tracking import choose_run_id
from rnnzoo.wandb_support import choose_mode

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"
SWEEP = ROOT / "experiments" / "sweeps" / "cells.yaml"
#: a sweep's parameters of every kind a sweep file can give
PARAMS: dict[str, Any] = {
    "model.cell": "gru",
    "trainer.seed": 2,
    "model.bidirectional": True,
    "trainer.eval_batches": None,
    "optim.lr": 1e-05,
    "tracking.tags": ["a", "b c"],
    "controllers": {"clip_norm": {"max_norm": 0.25}},
    "tracking.notes": "seed 2",
}
#: the agent's macros, each a whole argument list
FORMS = ["args", "args_no_equals", "args_no_hyphens", "args_no_boolean_flags", "args_json"]
FORMS += ["args_append_hydra", "args_override_hydra", "args_json_file"]


def agent_arguments(params: dict[str, Any], tmp_path: Path) -> dict[str, list[str]]:
    """Each form of ``params`` as wandb's own helper writes it for the agent."""
    forms = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    json_file = tmp_path / "config-run.json"  # what the agent writes for ${args_json_file}
    json_file.write_text(forms["args_json"][0])
    return {**forms, "args_json_file": [str(json_file)]}


def expected(resolved: dict[str, Any]) -> None:
    assert resolved["model"]["cell"] == "gru"
    assert resolved["model"]["bidirectional"] is True
    assert resolved["trainer"]["seed"] == 2
    assert resolved["trainer"]["eval_batches"] is None
    assert resolved["optim"]["lr"] == 1e-05
    assert resolved["tracking"]["tags"] == ["a", "b c"]
    assert resolved["tracking"]["notes"] == "seed 2"
    assert resolved["controllers"] == {"clip_norm": {"max_norm": 0.25}}
    assert resolved["task"]["length"] == 50  # the experiment's own values stay


def test_rnnzoo_accepts_every_argument_form_of_a_sweep_agent(tmp_path):
    """``rnnzoo config EXP ARGS`` as real processes, ARGS as wandb writes them."""
    forms = agent_arguments(PARAMS, tmp_path)
    assert forms["args_no_boolean_flags"][2] == "--model.bidirectional"  # a bare flag
    runs = {
        form: subprocess.Popen(
            [sys.executable, "-m", "rnnzoo", "config", str(ADDING), *forms[form]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for form in FORMS
    }
    for form, process in runs.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{form}: {err}"
        expected(yaml.safe_load(out))


@pytest.mark.parametrize(
    ("args", "dotlist"),
    [
        (["--model.fused", "--trainer.seed=1"], ["model.fused=true", "trainer.seed=1"]),
        (
            ["--model.fused", "False", "--trainer.steps", "7"],
            ["model.fused=False", "trainer.steps=7"],
        ),
        (["--trainer.seed", "1", "--model.fused"], ["trainer.seed=1", "model.fused=true"]),
        (["--model.fused", "trainer.seed=1"], ["model.fused=true", "trainer.seed=1"]),
        (["--task.some_switch"], ["task.some_switch=true"]),  # a plugin's parameter
        (
            ["tracking.name=None", "tracking.tags=[a, b]"],
            ["tracking.name=null", "tracking.tags=[a, b]"],
        ),
        (["task.x={'k': None, 'n': [1, 'two']}"], ['task.x={"k": null, "n": [1, "two"]}']),
        (["task.x=[${a}]", "task.y=Nonesuch"], ["task.x=[${a}]", "task.y=Nonesuch"]),
        (
            ['{"tracking.notes": "a: b", "model.cell": "gru"}'],
            ['tracking.notes="a: b"', 'model.cell="gru"'],
        ),
    ],
)
def test_override_forms_and_python_values(args: list[str], dotlist: list[str]) -> None:
    assert normalize_overrides(args) == dotlist


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trainer.steps"], "Override '--trainer.steps' has no value"),
        (["--trainer.steps", "--model.cell=gru"], "Override '--trainer.steps' has no value"),
        (["{not json"], "it is not valid JSON"),
        (["[1, 2]", "{}"], "is not of the form key=value"),
        (['["a"]'], "is not of the form key=value"),
        (['{"a": 1'], "not valid JSON"),
        (["missing.json"], "Cannot read the overrides file 'missing.json'"),
        (["=1"], "is not of the form key=value"),
    ],
)
def test_malformed_sweep_arguments_say_what_is_wrong(args: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        normalize_overrides(args)


def test_the_run_id_is_the_agents(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    assert re.fullmatch(r"[0-9a-f]{8}", choose_run_id())
    monkeypatch.setenv("WANDB_RUN_ID", "q7x2k9ab")
    assert choose_run_id() == "q7x2k9ab"
    monkeypatch.setenv("WANDB_RUN_ID", "../elsewhere")
    with pytest.raises(UsageError, match="WANDB_RUN_ID is '../elsewhere'"):
        choose_run_id()
    result = rnnzoo("train", ADDING, "--run-dir", tmp_path / "run")
    assert result.code == 2 and "a run id is 1 to 64 letters" in result.err
    assert not (tmp_path / "run").exists()


def test_under_an_agent_runs_report_online_unless_wandb_mode_says_otherwise(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    assert choose_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    assert choose_mode("offline") == "online"
    assert choose_mode("disabled") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert choose_mode("online") == "offline"


def test_the_sweep_file_is_a_grid_of_cells_and_seeds_shown_in_the_docs():
    sweep = load_sweep_config(str(SWEEP))
    assert sweep["method"] == "grid"
    assert sweep["parameters"] == {
        "model.cell": {"values": ["lstm", "gru", "elman"]},
        "trainer.seed": {"values": [0, 1, 2]},
    }
    assert sweep["program"] == "rnnzoo"
    assert sweep["command"][:6] == [
        "${env}",
        "python",
        "-m",
        "rnnzoo",
        "train",
        "experiments/adding.yaml",
    ]
    assert sweep["command"][-1] == "${args_no_hyphens}"
    docs = (ROOT / "docs" / "sweeps.md").read_text(encoding="utf-8")
    shown = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", docs, re.S)]
    assert sweep in shown, "docs/sweeps.md shows experiments/sweeps/cells.yaml as it is"


def test_a_sweep_agent_runs_the_command_as_written(tmp_path, monkeypatch):
    """wandb's Agent starts one run of the sweep file's command, as `wandb agent`
    does: the run's folder, run.json and W&B run carry the agent's run id, its
    config the sweep's values; `--resume` reopens that W&B run."""
    sweep = load_sweep_config(str(SWEEP))
    (tmp_path / "experiments").mkdir()  # the command names the experiment relative to
    shutil.copy(ADDING, tmp_path / "experiments" / "adding.yaml")  # where the agent runs
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{Path('/usr/bin')}")
    for key, value in {
        "WANDB_SWEEP_ID": "cellsweep",  # `wandb agent` sets these two,
        "WANDB_DIR": str(tmp_path),
        "WANDB_MODE": "offline",  # the user's choice: no network here
        "WANDB_SILENT": "true",
        "WANDB_RUN_ID": "unset",  # the agent sets these two for each run
        "WANDB_SWEEP_PARAM_PATH": "unset",
        "OMP_NUM_THREADS": "1",
    }.items():
        monkeypatch.setenv(key, value)
    small = {"task.length": 6, "task.val_size": 16, "model.hidden_size": 4, "trainer.steps": 4}
    small |= {"trainer.batch_size": 4, "trainer.eval_every": 2, "gradflow.every": 2}
    params = {"model.cell": "gru", "trainer.seed": 1, **small}
    agent = Agent(api=None, queue=None, sweep_id="cellsweep")
    agent._sweep_command = sweep["command"]
    agent._command_run(
        {
            "type": "run",
            "run_id": "agentrun1",
            "program": sweep["program"],
            "args": {k: {"value": v} for k, v in params.items()},
        }
    )
    process = agent._run_processes["agentrun1"]
    try:
        assert process.wait(timeout=300) == 0
    finally:
        if process.poll() is None:
            process.kill()

    (folder,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"adding-gru-\d{8}-\d{6}-agentrun1", folder.name)
    assert json.loads((folder / "run.json").read_text()) == {"run_id": "agentrun1"}
    saved = yaml.safe_load((folder / "config.yaml").read_text())
    assert (saved["model"]["cell"], saved["trainer"]["seed"], saved["trainer"]["progress"]) == (
        "gru",
        1,
        False,
    )
    (log,) = run_files(folder)
    wb = read_run(log)
    assert (log.name, wb.run_id, wb.sweep_id) == ("run-agentrun1.wandb", "agentrun1", "cellsweep")
    assert (wb.config["model.cell"], wb.config["trainer.seed"]) == ("gru", 1)

    result = rnnzoo("train", "--resume", folder, "trainer.steps=6")
    assert result.code == 0, result.output
    assert len(list((folder / "wandb").glob("offline-run-*"))) == 1  # the parts, joined
    assert [f.name for f in run_files(folder)] == [
        "run-agentrun1.wandb",
        "run-agentrun1.part2.wandb",
    ]
    assert {read_run(f).run_id for f in run_files(folder)} == {"agentrun1"}
