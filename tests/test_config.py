"""``rnnzoo config``: YAML plus overrides, resolved and validated, through the real CLI."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import yaml
from cli_run import Result, rnnzoo, write

from rnnzoo import config

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RNNZOO_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("RNNZOO_TRACE_PLUGINS", raising=False)


def resolved(*args: str | Path) -> dict[str, typing.Any]:
    result = rnnzoo("config", *args)
    assert result.code == 0, result.output
    data = yaml.safe_load(result.out)
    assert isinstance(data, dict)
    return data


def assert_config_error(result: Result, *fragments: str) -> None:
    assert result.code == 2, result.output
    assert result.out == "" and "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in result.err, result.err


# -- resolving ------------------------------------------------------------------


def test_prints_the_resolved_config() -> None:
    cfg = resolved(ADDING, "trainer.steps=5")
    assert cfg["trainer"]["steps"] == 5  # the override
    assert cfg["optim"]["lr"] == 0.003  # the YAML file
    assert cfg["model"]["num_layers"] == 1  # the structured default
    assert cfg["controllers"] == {"clip_norm": {"max_norm": 1.0}}
    assert set(cfg) == {f.name for f in dataclasses.fields(config.ExperimentConfig)}


def test_without_a_file_prints_the_defaults() -> None:
    cfg = resolved()
    assert cfg["model"]["cell"] == config.ModelConfig.cell
    assert cfg["task"] == {"name": "adding"}


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer.steps=7", "model.cell=gru"],
        ["--trainer.steps=7", "--model.cell=gru"],
        ["--trainer.steps", "7", "--model.cell", "gru"],
        ["--trainer.steps", "7", "model.cell=gru"],
    ],
)
def test_sweep_agent_override_forms(overrides: list[str]) -> None:
    cfg = resolved(ADDING, *overrides)
    assert cfg["trainer"]["steps"] == 7
    assert cfg["model"]["cell"] == "gru"


def test_malformed_overrides() -> None:
    assert_config_error(
        rnnzoo("config", ADDING, "--trainer.steps"),
        "Override '--trainer.steps' has no value",
    )
    assert_config_error(
        rnnzoo("config", ADDING, "trainer.steps"),
        "Override 'trainer.steps' is not of the form key=value",
    )


# -- keys and types ---------------------------------------------------------------


def test_unknown_key_lists_valid_keys_and_suggests() -> None:
    result = rnnzoo("config", ADDING, "trainer.stepz=5")
    assert_config_error(
        result, "Unknown config key 'trainer.stepz' in the overrides", "Did you mean 'steps'?"
    )
    valid = re.search(r"Valid keys in 'trainer': (.*) \(see", result.err)
    assert valid is not None
    assert valid.group(1).split(", ") == [f.name for f in dataclasses.fields(config.TrainerConfig)]
    assert_config_error(
        rnnzoo("config", ADDING, "modle.cell=gru"),
        "Unknown config key 'modle'",
        "Did you mean 'model'?",
        "Valid keys in the top level: plugins, task, model,",
    )


def test_unknown_key_in_the_yaml_file_names_the_file(tmp_path: Path) -> None:
    experiment = write(tmp_path / "e.yaml", "model:\n  hiden_size: 32\n")
    assert_config_error(
        rnnzoo("config", experiment),
        f"Unknown config key 'model.hiden_size' in '{experiment}'",
        "Did you mean 'hidden_size'?",
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("trainer.steps=abc", "'trainer.steps' in the overrides must be int"),
        ("model.hidden_size=1.5", "'model.hidden_size' in the overrides must be int"),
        ("trainer.eval_batches=all", "'trainer.eval_batches' in the overrides must be int | None"),
        ("model.fused=maybe", "'model.fused' in the overrides must be bool"),
        ("tracking.tags=abc", "'tracking.tags' in the overrides must be a list"),
        ("task=adding", "'task' in the overrides must be a mapping"),
        ("controllers=[1]", "'controllers' in the overrides must be a mapping"),
        ("model=3", "'model' in the overrides must be a section"),
        ("model.cell=[a]", "'model.cell' in the overrides must be str, not a list"),
    ],
)
def test_wrong_type_names_the_expected_type(override: str, expected: str) -> None:
    assert_config_error(rnnzoo("config", ADDING, override), expected)


def test_wrong_type_in_the_yaml_file(tmp_path: Path) -> None:
    experiment = write(tmp_path / "e.yaml", "trainer:\n  batch_size: sixty-four\n")
    assert_config_error(
        rnnzoo("config", experiment),
        f"Config key 'trainer.batch_size' in '{experiment}' must be int",
        "The default is 64",
    )


def test_value_outside_the_choices() -> None:
    assert_config_error(
        rnnzoo("config", ADDING, "optim.name=adamm"),
        "'optim.name' is 'adamm'; it must be one of adam, sgd, adamw, rmsprop.",
        "Did you mean 'adam'?",
    )
    assert_config_error(
        rnnzoo("config", ADDING, "trainer.on_nonfinite=ignore"),
        "must be one of skip, stop, raise",
    )


# -- plugin names and parameters ------------------------------------------------------


def test_unknown_cell_suggests_the_closest() -> None:
    result = rnnzoo("config", ADDING, "model.cell=lstn")
    assert result.code == 2
    assert result.err == (
        "Error: Unknown cell 'lstn'. Did you mean 'lstm'? (see: rnnzoo list cells)\n"
    )


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.head=sequense", "Unknown head 'sequense'. Did you mean 'sequence'?"),
        ("model.activation=tahn", "Unknown activation 'tahn'. Did you mean 'tanh'?"),
        ("task.name=adding_problem", "Unknown task 'adding_problem'. Did you mean 'adding'?"),
        ("controllers.clip_nrm.max_norm=1", "Unknown controller 'clip_nrm'."),
    ],
)
def test_unknown_names_of_every_kind(override: str, expected: str) -> None:
    assert_config_error(rnnzoo("config", ADDING, override), expected)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["model.cell_args.forget_baes=1"],
            [
                "Unknown parameter 'forget_baes' for cell 'lstm' at 'model.cell_args.forget_baes'",
                "Did you mean 'forget_bias'?",
                "Valid parameters: forget_bias",
                "(see: rnnzoo describe lstm)",
            ],
        ),
        (["model.cell_args.forget_bias=high"], ["'model.cell_args.forget_bias' must be float"]),
        (
            ["model.head_args.hiden=8"],
            ["Unknown parameter 'hiden' for head 'sequence'", "Valid parameters: hidden"],
        ),
        (["model.head_args.hidden=wide"], ["'model.head_args.hidden' must be int"]),
        (
            ["task.lenght=10"],
            ["Unknown parameter 'lenght' for task 'adding'", "Valid parameters: length, val_size"],
        ),
        (["task.length=1.5"], ["'task.length' must be int, but the config gives 1.5 (float)"]),
        (
            ["controllers.clip_norm.max_nrm=1"],
            [
                "Unknown parameter 'max_nrm' for controller 'clip_norm'",
                "Valid parameters: max_norm",
            ],
        ),
        (
            ["controllers.clip_norm.max_norm=big"],
            ["'controllers.clip_norm.max_norm' must be float"],
        ),
        (
            ["model.activation=leaky_relu", "model.activation_args.slope=0.1"],
            ["Unknown parameter 'slope' for activation 'leaky_relu'", "negative_slope"],
        ),
        (
            ["model.activation=tanh", "model.activation_args.negative_slope=0.1"],
            ["Unknown parameter 'negative_slope' for activation 'tanh'", "(none)"],
        ),
    ],
)
def test_component_parameters_are_checked_against_signatures(
    overrides: list[str], expected: list[str]
) -> None:
    assert_config_error(rnnzoo("config", ADDING, *overrides), *expected)


def test_valid_component_parameters_pass() -> None:
    cfg = resolved(
        ADDING,
        "model.cell=elman",
        "model.activation=leaky_relu",
        "model.activation_args.negative_slope=0.1",
        "model.head_args.hidden=8",
        "task.length=20",
        "controllers.clip_value.clip_value=1",  # an int where a float is expected
        "controllers.clip_norm=null",  # switches the YAML's controller off
    )
    assert cfg["model"]["activation_args"] == {"negative_slope": 0.1}
    assert cfg["controllers"]["clip_norm"] is None


def test_required_parameter_of_a_plugin_cell(tmp_path: Path) -> None:
    plugin = write(
        tmp_path / "deep.py",
        """
        from rnnzoo import hookimpl
        from rnnzoo_plugins.cells.elman import ElmanCell


        class DeepCell(ElmanCell):
            \"\"\"Needs a depth.\"\"\"

            def __init__(self, input_size: int, hidden_size: int, activation, depth: int):
                super().__init__(input_size, hidden_size, activation)


        @hookimpl
        def rnnzoo_cells():
            return {"deep": DeepCell}
        """,
    )
    assert_config_error(
        rnnzoo("-p", plugin, "config", ADDING, "model.cell=deep"),
        "Cell 'deep' needs 'depth': set 'model.cell_args.depth'",
    )
    assert resolved(ADDING, "-p", plugin, "model.cell=deep", "model.cell_args.depth=2")


# -- the reference ------------------------------------------------------------------


def every_key(cls: type = config.ExperimentConfig, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += every_key(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def test_configuration_reference_covers_every_key_with_its_default() -> None:
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([\w.]+)` \|[^|]*\| `([^`]*)` \|", reference, re.MULTILINE))
    defaults = resolved()
    for key in every_key():
        assert key in rows, f"docs/configuration.md has no row for {key}"
        value: typing.Any = defaults
        for part in key.split("."):
            value = value[part]
        assert yaml.safe_load(rows[key]) == value, f"{key}: documented {rows[key]}, is {value!r}"


def test_values_from_the_environment_stay_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a run stores keeps every interpolation; the W&B config resolves all but
    the values that depend on the environment, directly, through a key, a section,
    a relative key or oc.select. ``rnnzoo config`` shows every value."""
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    cfg = config.load(
        None,
        [
            "tracking.group=${oc.env:SECRET_TOKEN}",
            "tracking.name=${.group}-run",
            "tracking.tags=[plain, '${oc.select:tracking.group,none}', '${tracking.project}']",
            "task.secret=${oc.decode:'${oc.env:SECRET_TOKEN}'}",
            "task.note=${tracking.name}",
            "run_dir=${trainer.steps}",
        ],
    )
    assert cfg.tracking.name == "hunter2-run"  # the config itself resolves as usual
    stored = config.to_yaml(cfg)
    assert "hunter2" not in stored
    assert "group: ${oc.env:SECRET_TOKEN}" in stored and "run_dir: ${trainer.steps}" in stored
    assert "hunter2" in config.to_yaml(cfg, resolve=True)
    flat = config.flatten(cfg)
    assert "hunter2" not in repr(flat)
    assert flat["tracking.group"] == "${oc.env:SECRET_TOKEN}"
    assert flat["tracking.name"] == "${.group}-run"
    assert flat["tracking.tags"] == ["plain", "${oc.select:tracking.group,none}", "rnnzoo"]
    assert flat["task.note"] == "${tracking.name}"
    assert flat["run_dir"] == "1000"
    assert flat["trainer.steps"] == 1000
