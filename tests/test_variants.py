"""Named variants of an experiment (rnnzoo.variants): ``variant=NAME`` applies the
settings the file's ``variants:`` gives that name, swept with ``-m``, kept in the
run's config and in the labels of ``rnnzoo compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_run import rnnzoo, write

from rnnzoo import config
from rnnzoo.compare import Run, configurations
from rnnzoo.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"


def test_a_variant_applies_its_settings_below_the_overrides() -> None:
    cfg = config.load(ADDING, ["variant=elman-relu"])
    assert (cfg.variant, cfg.model.cell, cfg.model.activation) == ("elman-relu", "elman", "relu")
    assert cfg.model.hidden_size == 64  # the file's settings stay
    cfg = config.load(ADDING, ["variant=elman-relu", "model.activation=tanh"])
    assert (cfg.variant, cfg.model.cell, cfg.model.activation) == ("elman-relu", "elman", "tanh")
    cfg = config.load(ADDING, ["variant=gru"])
    assert (cfg.variant, cfg.model.cell, cfg.model.activation) == ("gru", "gru", "tanh")
    assert config.flatten(cfg)["variant"] == "gru"  # W&B's config groups by it
    plain = config.load(ADDING)
    assert (plain.variant, plain.model.cell) == (None, "lstm")


def test_variants_take_dotted_keys_or_sections_and_the_file_may_choose(tmp_path: Path) -> None:
    exp = write(
        tmp_path / "exp.yaml",
        """
        variant: small
        model: {hidden_size: 16}
        variants:
          small: {model.hidden_size: 4, trainer: {steps: 7, batch_size: 2}}
          wide: {model: {hidden_size: 32, cell: gru}, controllers.clip_norm.max_norm: 0.5}
        """,
    )
    cfg = config.load(exp)
    assert (cfg.variant, cfg.model.hidden_size, cfg.trainer.steps) == ("small", 4, 7)
    assert cfg.trainer.batch_size == 2
    cfg = config.load(exp, ["variant=wide"])
    assert (cfg.variant, cfg.model.hidden_size, cfg.model.cell) == ("wide", 32, "gru")
    assert cfg.controllers.clip_norm.max_norm == 0.5 and cfg.trainer.steps == 1000
    cfg = config.load(exp, ["variant=null"])
    assert (cfg.variant, cfg.model.hidden_size) == (None, 16)


def test_a_saved_config_keeps_the_name_and_does_not_apply_it_again(tmp_path: Path) -> None:
    """config.yaml holds the settings as run (an override over the variant's too)
    and the name; loading it again changes nothing; another variant is refused."""
    cfg = config.load(ADDING, ["variant=elman-relu", "model.activation=tanh"])
    saved = tmp_path / "config.yaml"
    saved.write_text(config.to_yaml(cfg))
    data = yaml.safe_load(saved.read_text())
    assert data["variant"] == "elman-relu" and "variants" not in data
    again = config.load(saved, ["trainer.steps=10"])
    assert (again.variant, again.model.cell, again.model.activation) == (
        "elman-relu",
        "elman",
        "tanh",
    )
    with pytest.raises(ConfigError, match=r"Unknown variant 'gru' .* defines no variants"):
        config.load(saved, ["variant=gru"])


@pytest.mark.parametrize(
    ("variants", "overrides", "message"),
    [
        (
            "{lstm: {model.cell: lstm}, elman-relu: {model.cell: elman}}",
            ["variant=elman-rel"],
            r"^Unknown variant 'elman-rel' \(variant=elman-rel in the overrides\)\. '.*exp\.yaml' "
            r"defines the variants lstm, elman-relu\. Did you mean 'elman-relu'\? Choose one of "
            r"them with variant=NAME",
        ),
        (None, ["variant=lstm"], r"^Unknown variant 'lstm' .* defines no variants\. Define it"),
        ("[a, b]", [], r"^'variants' in '.*exp\.yaml' must be a mapping of names to settings"),
        ("{'a,b': {model.cell: gru}}", [], r"Variant 'a,b' in .* has a name that cannot be used"),
        ("{a: gru}", [], r"^Variant 'a' in .* must be a mapping of the settings"),
        ("{a: {variant: b}}", [], r"^Variant 'a' in .* sets 'variant'; a variant cannot"),
        ("{a: {model.cel: gru}}", [], r"^Unknown config key 'model.cel' in variant 'a' of"),
        ("{a: {trainer.steps: many}}", [], r"^Config key 'trainer.steps' in variant 'a' of .* int"),
    ],
)
def test_variant_mistakes_are_one_paragraph(
    tmp_path: Path, variants: str | None, overrides: list[str], message: str
) -> None:
    """Unknown names list the known ones; a variant's keys and values are checked
    when the file is loaded, whether it is chosen or not."""
    text = "model: {cell: gru}\n" + (f"variants: {variants}\n" if variants else "")
    exp = write(tmp_path / "exp.yaml", text)
    with pytest.raises(ConfigError, match=message) as caught:
        config.load(exp, overrides)
    assert "\n" not in str(caught.value)


def test_without_an_experiment_file_there_are_no_variants() -> None:
    with pytest.raises(ConfigError, match=r"^Unknown variant 'gru' .* No experiment file is given"):
        config.load(None, ["variant=gru"])


def test_a_grid_with_an_unknown_variant_starts_nothing(tmp_path: Path) -> None:
    result = rnnzoo(
        "train", ADDING, "-m", "variant=lstm,elman-relu,elmn", "trainer.seed=0,1",
        "--run-dir", tmp_path / "grid",
    )  # fmt: skip
    assert result.code == 2, result.output
    assert result.err.startswith("Error: Run 4 of the grid (variant=elmn trainer.seed=0)")
    assert "Unknown variant 'elmn' (variant=elmn in the overrides)" in result.err
    assert result.err.count("\n") == 1 and "Traceback" not in result.output
    assert "defines the variants lstm, gru, elman, elman-relu" in result.err
    assert not any((tmp_path / "grid").glob("*/config.yaml"))


def test_rnnzoo_config_shows_the_variant_applied() -> None:
    result = rnnzoo("config", ADDING, "variant=elman-relu")
    assert result.code == 0, result.output
    shown = yaml.safe_load(result.out)
    assert shown["variant"] == "elman-relu"
    assert (shown["model"]["cell"], shown["model"]["activation"]) == ("elman", "relu")


def flat_run(name: str, **settings: Any) -> Run:
    flat = {"task.name": "adding", "trainer.seed": 0, **settings}
    return Run(Path(name), {k.replace("__", "."): v for k, v in flat.items()}, None)


def test_compare_labels_configurations_by_their_variant() -> None:
    """The variant names a configuration; the keys its settings fix are left out,
    a key that differs within one variant stays."""
    runs = [
        flat_run("a", variant="lstm", model__cell="lstm", model__activation="tanh"),
        flat_run("b", variant="elman-relu", model__cell="elman", model__activation="relu"),
        flat_run("c", variant="elman-relu", model__cell="elman", model__activation="relu",
                 trainer__seed=1),
    ]  # fmt: skip
    assert [(c.label, [r.path.name for r in c.runs]) for c in configurations(runs)] == [
        ("variant=lstm", ["a"]),
        ("variant=elman-relu", ["b", "c"]),
    ]
    sizes = [
        flat_run("a", variant="gru", model__cell="gru", model__hidden_size=4),
        flat_run("b", variant="gru", model__cell="gru", model__hidden_size=8),
        flat_run("c", variant="lstm", model__cell="lstm", model__hidden_size=4),
    ]
    assert [c.label for c in configurations(sizes)] == [
        "variant=gru model.hidden_size=4",
        "variant=gru model.hidden_size=8",
        "variant=lstm model.hidden_size=4",
    ]
    assert [c.label for c in configurations(sizes[:1])] == ["all runs"]
