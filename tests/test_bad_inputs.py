"""Hostile input, one row each: every command answers a mistake with exit code 2
(usage) or 1 (runtime) and one paragraph that names the problem and the fix; a
traceback only with ``--debug``.

Rows that need a trained run share two tiny runs made once per module (an adding
regressor and a character language model) and copy them before spoiling them.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cli_run import Result, rnnzoo, write

from rnnzoo import checkpoint

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"
#: a tiny, quick adding run; rows add the override they are about
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
CONLLU_LINE = "1\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_\t_\n"
TEXT = "the quick brown fox jumps over the lazy dog. " * 20
#: nine levels of nested aliases, nine each: 9**9 strings once expanded (324 bytes)
ALIAS_BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)
#: lists nested 5000 deep: deeper than Python's recursion limit
DEEP = "[" * 5000 + "]" * 5000
CELL_PLUGIN = """
    from rnnzoo import hookimpl
    from rnnzoo_plugins.cells.elman import ElmanCell


    @hookimpl
    def rnnzoo_cells():
        return {"NAME": ElmanCell}
"""


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("RNNZOO_TRACE_PLUGINS", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two finished runs: ``adding`` (sequence head) and ``lm`` (char_lm, lm head)."""
    base = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RNNZOO_DISABLE_PLUGIN_AUTOLOAD", "1")
        env.setenv("WANDB_MODE", "disabled")
        adding = rnnzoo("train", ADDING, *SMALL, "--run-dir", base / "adding")
        assert adding.code == 0, adding.output
        text = write(base / "text.txt", TEXT)
        experiment = write(
            base / "lm.yaml",
            f"""
            task: {{name: char_lm, train: {text}, bptt: 8}}
            model: {{head: lm, hidden_size: 8, input_dim: 4}}
            trainer: {{steps: 2, batch_size: 2, checkpoint_every: 1, progress: false}}
            gradflow: {{every: 0}}
            tracking: {{wandb_mode: disabled}}
            """,
        )
        lm = rnnzoo("train", experiment, "--run-dir", base / "lm")
        assert lm.code == 0, lm.output
    return {"adding": base / "adding", "lm": base / "lm", "lm.yaml": experiment}


class Workspace:
    """Where a row builds its bad input: files in ``tmp`` and copies of trained runs."""

    def __init__(self, tmp: Path, trained: dict[str, Path]) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.trained = trained

    def text(self, name: str, content: str) -> Path:
        return write(self.tmp / name, content)

    def data(self, name: str, content: bytes) -> Path:
        path = self.tmp / name
        path.write_bytes(content)
        return path

    def run(self, kind: str = "adding") -> Path:
        """A private copy of a trained run folder."""
        copy = self.tmp / f"{kind}-run"
        if not copy.exists():
            shutil.copytree(self.trained[kind], copy)
        return copy

    def latest(self, kind: str = "adding") -> Path:
        return checkpoint.latest(self.run(kind))

    def lm(self, *overrides: str) -> list[str | Path]:
        """``train`` on the character LM experiment with ``overrides``."""
        return ["train", self.trained["lm.yaml"], *overrides, "--run-dir", self.tmp / "new"]

    def pos(self, train: Path, *overrides: str) -> list[str | Path]:
        """``train`` a tagger on the CoNLL-U file ``train``."""
        experiment = self.text(
            "pos.yaml",
            f"""
            task: {{name: conllu_tagging, train: {train}, dev: {train}}}
            model: {{head: per_token, hidden_size: 4, input_dim: 4}}
            trainer: {{steps: 2, batch_size: 2, progress: false}}
            gradflow: {{every: 0}}
            tracking: {{wandb_mode: disabled}}
            """,
        )
        return ["train", experiment, *overrides, "--run-dir", self.tmp / "new"]


def train(*overrides: str) -> Callable[[Workspace], list[str | Path]]:
    """``train`` the small adding experiment with ``overrides`` in a fresh folder."""
    return lambda w: ["train", ADDING, *SMALL, *overrides, "--run-dir", w.tmp / "new"]


def spoil_checkpoint(content: Callable[[bytes], bytes]) -> Callable[[Workspace], list[str | Path]]:
    """Resume a run whose newest checkpoint was replaced by ``content(original)``."""

    def build(w: Workspace) -> list[str | Path]:
        latest = w.latest()
        latest.write_bytes(content(latest.read_bytes()))
        return ["train", "--resume", w.run(), "trainer.steps=6"]

    return build


def no_checkpoints(w: Workspace) -> list[str | Path]:
    shutil.rmtree(w.run() / "checkpoints")
    return ["train", "--resume", w.run()]


def foreign_checkpoint(w: Workspace) -> list[str | Path]:
    torch.save({"weights": torch.zeros(3)}, w.latest())
    return ["eval", w.run()]


def relative_plugin_in_run_config(w: Workspace) -> list[str | Path]:
    """A run whose config.yaml names a plugin by a relative path (as runs made
    before plugin paths were saved absolute could)."""
    saved = w.run() / "config.yaml"
    text = saved.read_text(encoding="utf-8")
    assert "plugins: []\n" in text
    saved.write_text(text.replace("plugins: []\n", "plugins: [relplug.py]\n"))
    return ["eval", w.run()]


def no_checkpoints_eval(w: Workspace) -> list[str | Path]:
    shutil.rmtree(w.run() / "checkpoints")
    return ["eval", w.run()]


@dataclass(frozen=True)
class Case:
    id: str
    #: builds the bad input in the workspace and returns the command line
    args: Callable[[Workspace], list[str | Path]]
    code: int
    #: fragments of the message: the problem and the fix
    says: tuple[str, ...]
    #: click's own usage errors print no traceback even with --debug
    debug_traceback: bool = True


CASES = [
    # -- names of plugins and components -----------------------------------------
    Case(
        "unknown-cell",
        train("model.cell=lstn"),
        2,
        ("Unknown cell 'lstn'", "Did you mean 'lstm'", "rnnzoo list cells"),
    ),
    Case(
        "unknown-activation",
        train("model.cell=elman", "model.activation=tanhh"),
        2,
        ("Unknown activation 'tanhh'", "Did you mean 'tanh'"),
    ),
    Case(
        "unknown-controller",
        train("controllers.clip_nrm.max_norm=1"),
        2,
        ("Unknown controller 'clip_nrm'", "Did you mean 'clip_norm'"),
    ),
    Case(
        "unknown-task",
        train("task.name=addition"),
        2,
        ("Unknown task 'addition'", "rnnzoo list tasks"),
    ),
    Case("unknown-head", train("model.head=seq"), 2, ("Unknown head 'seq'", "rnnzoo list heads")),
    Case(
        "unknown-component-parameter",
        train("model.cell_args.forget=1.0"),
        2,
        ("Unknown parameter 'forget'", "Did you mean 'forget_bias'", "rnnzoo describe lstm"),
    ),
    Case(
        "describe-unknown-name",
        lambda w: ["describe", "lstn"],
        2,
        ("No component is called 'lstn'", "Did you mean 'lstm'", "rnnzoo list"),
    ),
    Case(
        "list-unknown-kind",
        lambda w: ["list", "cellz"],
        2,
        ("'cellz' is not one of", "'cells'"),
        debug_traceback=False,
    ),
    # -- the config: keys, types, choices, YAML, overrides -----------------------
    Case(
        "unknown-config-key",
        train("trainer.stepz=3"),
        2,
        ("Unknown config key 'trainer.stepz'", "Did you mean 'steps'", "Valid keys in 'trainer'"),
    ),
    Case(
        "wrong-value-type",
        train("trainer.steps=many"),
        2,
        ("'trainer.steps'", "must be int", "The default is 1000"),
    ),
    Case(
        "section-given-a-scalar", train("model=3"), 2, ("Config key 'model'", "must be a section")
    ),
    Case(
        "value-outside-choices",
        train("trainer.on_nonfinite=ignore"),
        2,
        ("'trainer.on_nonfinite' is 'ignore'", "skip, stop, raise"),
    ),
    Case(
        "unknown-optimizer",
        train("optim.name=sgdd"),
        2,
        ("'optim.name' is 'sgdd'", "adam, sgd, adamw, rmsprop", "Did you mean 'sgd'"),
    ),
    Case(
        "component-parameter-type",
        train("model.cell=elman", "model.cell_args.init_scale=big"),
        2,
        ("'model.cell_args.init_scale' must be float", "'big'"),
    ),
    Case(
        "override-without-equals",
        lambda w: ["config", ADDING, "trainer.steps"],
        2,
        ("Override 'trainer.steps' is not of the form key=value", "trainer.steps=500"),
    ),
    Case(
        "override-with-an-unclosed-bracket",
        train("trainer.steps=[4"),
        2,
        (
            "Cannot parse the override 'trainer.steps=[4'",
            "did not find expected ',' or ']'",
            "quote one that holds brackets",
        ),
    ),
    Case(
        "bad-yaml-syntax",
        lambda w: ["train", w.text("bad.yaml", "task: [adding\nmodel: {cell: lstm\n")],
        2,
        ("bad.yaml' is not valid YAML", "at line 2, column 6", "closed brackets"),
    ),
    Case(
        "yaml-that-is-a-list",
        lambda w: ["config", w.text("list.yaml", "- task\n- model\n")],
        2,
        ("must hold a mapping of sections", "not list"),
    ),
    Case(
        "yaml-not-utf8",
        lambda w: ["config", w.data("latin.yaml", "task: {name: café}\n".encode("latin-1"))],
        2,
        ("latin.yaml' is not UTF-8 text (byte 0xe9", "Save it as UTF-8"),
    ),
    Case(
        "yaml-alias-bomb",
        lambda w: ["config", w.text("bomb.yaml", ALIAS_BOMB)],
        2,
        (
            "bomb.yaml' at line 2, column 8",
            "the alias '*a' repeats an anchored value",
            "rnnzoo refuses YAML aliases",
            "${other.key}",
        ),
    ),
    Case(
        "yaml-merge-key-alias",
        lambda w: [
            "config",
            w.text("merge.yaml", "base: &base {steps: 4}\ntrainer:\n  <<: *base\n"),
        ],
        2,
        ("merge.yaml' at line 3, column 7", "the alias '*base'", "${other.key}"),
    ),
    Case(
        "override-with-an-alias",
        train("tracking.tags=[&t x, *t, *t]"),
        2,
        ("Cannot use the override 'tracking.tags=[&t x, *t, *t]'", "the alias '*t'"),
    ),
    Case(
        "yaml-null-key",
        lambda w: ["config", w.text("null.yaml", "null: 3\n")],
        2,
        ("null.yaml' at line 1, column 1", "a key is empty (null or ~)"),
    ),
    Case(
        "yaml-null-key-in-a-section",
        lambda w: ["config", w.text("tilde.yaml", "model:\n  cell: gru\n  ~: 3\n")],
        2,
        ("tilde.yaml' at line 3, column 3", "a key is empty (null or ~)"),
    ),
    Case(
        "yaml-bool-key",
        lambda w: ["config", w.text("on.yaml", "trainer:\n  on: 3\n")],
        2,
        ("on.yaml' at line 2, column 3", "the key True is read as bool", "quote it"),
    ),
    Case(
        "yaml-nested-too-deep",
        lambda w: ["config", w.text("deep.yaml", f"task: {{name: adding, x: {DEEP}}}\n")],
        2,
        ("deep.yaml' at line 1", "nested more than 32 levels deep"),
    ),
    Case(
        "override-nested-too-deep",
        train(f"task.x={DEEP}"),
        2,
        ("Cannot use the override 'task.x=[[[[[[", "...'", "nested more than 32 levels deep"),
    ),
    Case(
        "missing-experiment-file",
        lambda w: ["train", w.tmp / "nope.yaml"],
        2,
        ("nope.yaml' does not exist", "experiments/adding.yaml"),
    ),
    Case(
        "train-without-experiment",
        lambda w: ["train"],
        2,
        ("Name an experiment file", "rnnzoo train experiments/adding.yaml"),
    ),
    Case(
        "unresolvable-interpolation",
        train("tracking.name=${oc.env:RNNZOO_UNSET_VARIABLE_XYZ}"),
        2,
        (
            "'tracking.name' cannot be resolved",
            "RNNZOO_UNSET_VARIABLE_XYZ",
            "set what it refers to",
        ),
    ),
    Case(
        "interpolation-of-wrong-type",
        train("trainer.steps=${tracking.project}"),
        2,
        ("'trainer.steps' cannot be resolved", "could not be converted to Integer"),
    ),
    # -- sizes and settings that cannot work -------------------------------------
    Case(
        "zero-hidden-size",
        train("model.hidden_size=0"),
        2,
        ("'model.hidden_size' must be at least 1, got 0",),
    ),
    Case(
        "negative-hidden-size",
        train("model.hidden_size=-8"),
        2,
        ("'model.hidden_size' must be at least 1, got -8",),
    ),
    Case(
        "zero-layers",
        train("model.num_layers=0"),
        2,
        ("'model.num_layers' must be at least 1, got 0",),
    ),
    Case(
        "zero-input-dim",
        train("model.input_dim=0"),
        2,
        ("'model.input_dim' must be at least 1 or null, got 0",),
    ),
    Case(
        "zero-batch-size",
        train("trainer.batch_size=0"),
        2,
        ("'trainer.batch_size' must be at least 1, got 0",),
    ),
    Case(
        "negative-steps",
        train("trainer.steps=-5"),
        2,
        ("'trainer.steps' must be at least 1, got -5",),
    ),
    Case(
        "zero-sequence-length",
        train("task.length=0"),
        2,
        ("'task.length' must be at least 2, got 0",),
    ),
    Case("zero-bptt", lambda w: w.lm("task.bptt=0"), 2, ("'task.bptt' must be at least 1, got 0",)),
    Case(
        "k2-below-k1",
        train("controllers.tbptt.k1=5", "controllers.tbptt.k2=2"),
        2,
        ("'controllers.tbptt.k2' (2) must be at least k1 (5)",),
    ),
    Case(
        "dropout-of-one",
        train("model.num_layers=2", "model.dropout=1.0"),
        2,
        ("'model.dropout' must be in [0, 1), got 1.0",),
    ),
    Case(
        "negative-clip-norm",
        train("controllers.clip_norm.max_norm=-1"),
        2,
        ("'controllers.clip_norm.max_norm' must be positive",),
    ),
    Case(
        "nan-learning-rate",
        train("optim.lr=nan"),
        2,
        ("'optim.lr' must be positive and finite, got nan",),
    ),
    Case(
        "beta-out-of-range",
        train("optim.beta1=1.5"),
        2,
        ("'optim.beta1' and 'optim.beta2' must be in [0, 1)", "got 1.5"),
    ),
    Case(
        "zero-keep-checkpoints",
        train("trainer.keep_checkpoints=0"),
        2,
        ("'trainer.keep_checkpoints' must be at least 1",),
    ),
    Case(
        "zero-max-nonfinite",
        train("trainer.max_nonfinite=0"),
        2,
        ("'trainer.max_nonfinite' must be at least 1",),
    ),
    Case(
        "seed-too-large",
        train("trainer.seed=18446744073709551616"),
        2,
        (
            "'trainer.seed' must be an integer from -9223372036854775808 to 18446744073709551615",
            "got 18446744073709551616",
        ),
    ),
    Case(
        "seed-too-small",
        train("trainer.seed=-9223372036854775809"),
        2,
        ("'trainer.seed' must be an integer from", "got -9223372036854775809"),
    ),
    Case(
        "run-name-that-climbs-out-of-runs",
        train("tracking.name=../../x"),
        2,
        ("'tracking.name' must be a plain folder name", "got '../../x'"),
    ),
    Case(
        "absolute-run-name",
        train("tracking.name=/tmp/x"),
        2,
        ("'tracking.name' must be a plain folder name", "got '/tmp/x'"),
    ),
    Case(
        "empty-run-name",
        train("tracking.name=''"),
        2,
        ("'tracking.name' must be a plain folder name", "got ''", "null"),
    ),
    Case(
        "unsupported-device",
        train("trainer.device=meta"),
        2,
        ("'trainer.device' is 'meta'", "auto, cpu or cuda"),
    ),
    Case(
        "unknown-early-stop-metric",
        train("trainer.early_stop_metric=val/accuracy"),
        2,
        ("Early-stopping metric 'val/accuracy'", "val/mse", "Set trainer.early_stop_metric"),
    ),
    # -- model, head and task that do not fit ------------------------------------
    Case(
        "per-token-head-on-a-sequence-task",
        train("model.head=per_token"),
        2,
        ("Head 'per_token' predicts per token", "one label per sequence", "rnnzoo list heads"),
    ),
    Case(
        "sequence-head-on-a-language-model",
        lambda w: w.lm("model.head=sequence"),
        2,
        ("Head 'sequence' predicts per sequence", "a label per token"),
    ),
    Case(
        "tbptt-with-a-bidirectional-head",
        train(
            "task.name=copy_memory",
            "task.length=4",
            "model.head=bidirectional",
            "controllers.tbptt.k1=2",
            "controllers.tbptt.k2=2",
        ),
        2,
        ("Truncated BPTT cannot train a bidirectional model", "Remove 'controllers.tbptt'"),
    ),
    Case(
        "two-window-planners",
        train("controllers.tbptt.k1=2", "controllers.tbptt.k2=2", "controllers.tbptt2.k1=2"),
        2,
        ("Unknown controller 'tbptt2'",),
    ),
    # -- data files --------------------------------------------------------------
    Case(
        "missing-data-path",
        lambda w: w.lm(f"task.train={w.tmp / 'missing.txt'}"),
        2,
        ("missing.txt' ('task.train') does not exist", "task.train=PATH"),
    ),
    Case(
        "empty-data-file",
        lambda w: w.lm(f"task.train={w.text('empty.txt', '')}"),
        2,
        ("empty.txt' ('task.train') is empty",),
    ),
    Case(
        "non-utf8-text",
        lambda w: w.lm(f"task.train={w.data('latin.txt', 'café crème '.encode('latin-1') * 40)}"),
        2,
        ("latin.txt' line 1 is not UTF-8 text (byte 0xe9)", "iconv"),
    ),
    Case(
        "text-too-short-for-the-batch",
        lambda w: w.lm(f"task.train={w.text('short.txt', 'abc')}", "trainer.batch_size=64"),
        2,
        ("too few for 64 parallel streams", "smaller trainer.batch_size"),
    ),
    Case(
        "malformed-conllu",
        lambda w: w.pos(w.text("bad.conllu", "1\tI\tI\tPRON\n")),
        2,
        ("bad.conllu' line 1 is not a CoNLL-U line", "10 are expected"),
    ),
    Case(
        "conllu-word-ids-out-of-order",
        lambda w: w.pos(w.text("ids.conllu", CONLLU_LINE.replace("1\t", "3\t", 1))),
        2,
        ("ids.conllu' line 1: word id '3' should be 1",),
    ),
    Case(
        "conllu-without-sentences",
        lambda w: w.pos(w.text("none.conllu", "# only a comment\n")),
        2,
        ("none.conllu' holds no sentences",),
    ),
    Case(
        "eval-on-missing-dev-file",
        lambda w: ["eval", w.run("lm"), f"task.dev={w.tmp / 'gone.txt'}"],
        2,
        ("gone.txt' ('task.dev') does not exist",),
    ),
    # -- run folders and checkpoints ---------------------------------------------
    Case(
        "resume-a-folder-that-is-no-run",
        lambda w: ["train", "--resume", w.tmp],
        2,
        ("is not an rnnzoo run folder (no config.yaml)", "a previous `rnnzoo train` wrote"),
    ),
    Case(
        "jobs-without-a-grid",
        lambda w: ["train", ADDING, *SMALL, "--jobs", "2"],
        2,
        ("--jobs sets how many runs of a grid train at once; add -m.",),
    ),
    Case(
        "resume-and-run-dir-together",
        lambda w: ["train", "--resume", w.run(), "--run-dir", w.tmp / "x"],
        2,
        ("--resume continues a run in its own folder; leave out --run-dir",),
    ),
    Case(
        "eval-a-run-without-checkpoint",
        no_checkpoints_eval,
        2,
        ("No checkpoint in", "trainer.checkpoint_every"),
    ),
    Case(
        "truncated-checkpoint",
        spoil_checkpoint(lambda b: b[: len(b) // 2]),
        2,
        ("is corrupt or truncated", "Delete it to resume from the previous checkpoint"),
    ),
    Case(
        "random-bytes-checkpoint",
        spoil_checkpoint(lambda b: os.urandom(len(b))),
        2,
        ("is corrupt or truncated", "Delete it"),
    ),
    Case(
        "raw-pickle-checkpoint",
        spoil_checkpoint(lambda b: pickle.dumps({"step": 1, "model": {}})),
        2,
        ("is corrupt or truncated", "not the zip archive torch.save writes"),
    ),
    Case("empty-checkpoint", spoil_checkpoint(lambda b: b""), 2, ("is corrupt or truncated",)),
    Case("checkpoint-of-something-else", foreign_checkpoint, 2, ("is not an rnnzoo checkpoint",)),
    Case(
        "resume-with-an-incompatible-config",
        lambda w: ["train", "--resume", w.run(), "model.hidden_size=5"],
        2,
        (
            "does not fit this experiment's model",
            "size mismatch for recurrence.cells.0.weight_ih",
            "is torch.Size([20, 2]))",
            "Resume with the run's own config.yaml",
        ),
    ),
    Case(
        "eval-with-an-incompatible-config",
        lambda w: ["eval", w.run(), "model.num_layers=2"],
        2,
        (
            "does not fit this experiment's model",
            'Missing key(s) in state_dict: "recurrence.cells.1.weight_ih"',
        ),
    ),
    Case(
        "run-config-with-a-relative-plugin-path",
        relative_plugin_in_run_config,
        2,
        (
            "config.yaml' names the plugin 'relplug.py' by a relative path",
            "absolute path",
        ),
    ),
    Case(
        "eval-on-a-folder-that-is-no-run",
        lambda w: ["eval", w.tmp],
        2,
        ("is not an rnnzoo run folder (no config.yaml)",),
    ),
    Case(
        "run-folder-under-a-regular-file",
        lambda w: ["train", ADDING, *SMALL, "--run-dir", w.text("file", "x") / "run"],
        2,
        ("Cannot write the run folder", "Not a directory", "Pass a writable folder with --run-dir"),
    ),
    Case(
        "run-folder-that-holds-a-run",
        lambda w: ["train", ADDING, *SMALL, "--run-dir", w.run()],
        2,
        ("already holds a run", "rnnzoo train --resume", "pass another --run-dir"),
    ),
    Case(
        "run-folder-is-a-file",
        lambda w: ["train", ADDING, *SMALL, "--run-dir", w.text("file", "x")],
        2,
        ("Invalid value for '--run-dir'", "is a file"),
        debug_traceback=False,
    ),
    # -- sample and gradflow ------------------------------------------------------
    Case(
        "sample-a-run-that-is-no-language-model",
        lambda w: ["sample", w.run()],
        2,
        ("uses head 'sequence', which cannot sample", "train with model.head=lm"),
    ),
    Case(
        "sample-at-temperature-zero",
        lambda w: ["sample", w.run("lm"), "--temperature", "0"],
        2,
        ("--temperature must be positive",),
    ),
    Case(
        "sample-at-temperature-nan",
        lambda w: ["sample", w.run("lm"), "--temperature", "nan"],
        2,
        ("--temperature must be positive and finite",),
    ),
    Case(
        "sample-at-temperature-inf",
        lambda w: ["sample", w.run("lm"), "--temperature", "inf"],
        2,
        ("--temperature must be positive and finite",),
    ),
    Case(
        "sample-no-tokens",
        lambda w: ["sample", w.run("lm"), "--length", "0"],
        2,
        ("--length and --top-k at least 1",),
    ),
    Case(
        "sample-a-folder-that-is-no-run",
        lambda w: ["sample", w.tmp],
        2,
        ("is not an rnnzoo run folder",),
    ),
    Case(
        "gradflow-unknown-cell",
        lambda w: ["gradflow", "--configs", "lstn", "--out", w.tmp / "g"],
        2,
        ("Unknown cell 'lstn'", "Did you mean 'lstm'"),
    ),
    Case(
        "gradflow-unknown-activation",
        lambda w: ["gradflow", "--configs", "elman:tanhh", "--out", w.tmp / "g"],
        2,
        ("Unknown activation 'tanhh'",),
    ),
    Case(
        "gradflow-too-short",
        lambda w: ["gradflow", "--configs", "lstm", "--length", "1", "--out", w.tmp / "g"],
        2,
        ("Got --length 1", "the length must be at least 2"),
    ),
    # -- plugins ------------------------------------------------------------------
    Case(
        "plugin-import-error",
        lambda w: ["-p", w.text("broken.py", "import rnnzoo_no_such_module_xyz\n"), "list"],
        2,
        ("broken.py' failed to import", "No module named 'rnnzoo_no_such_module_xyz'", "--debug"),
    ),
    Case(
        "plugins-command-with-a-broken-plugin",
        lambda w: ["plugins", "-p", w.text("broken.py", "raise ValueError('half written')\n")],
        2,
        ("broken.py' failed to import: ValueError: half written",),
    ),
    Case(
        "plugin-that-exits-at-import",
        lambda w: ["-p", w.text("quits.py", "import sys\n\nsys.exit(0)\n"), "list"],
        2,
        ("quits.py' called sys.exit(0) while being imported", "a plugin must not exit"),
    ),
    Case(
        "plugin-that-exits-with-a-message",
        lambda w: [
            "plugins",
            "-p",
            w.text("says.py", "raise SystemExit('no GPU here')\n"),
        ],
        2,
        ("says.py' called sys.exit('no GPU here') while being imported",),
    ),
    Case(
        "plugin-file-missing",
        lambda w: ["-p", w.tmp / "absent.py", "list"],
        2,
        ("absent.py' does not exist", "Pass the path of a Python file"),
    ),
    Case(
        "plugin-hook-wrong-signature",
        lambda w: [
            "-p",
            w.text(
                "sig.py",
                "from rnnzoo import hookimpl\n\n@hookimpl\ndef rnnzoo_step_end(run, step, loss):\n    pass\n",
            ),
            "list",
        ],
        2,
        (
            "sig.py' ",
            "does not fit rnnzoo's hooks",
            "rnnzoo calls rnnzoo_step_end(run, step, metrics)",
        ),
    ),
    Case(
        "plugin-hook-unknown-name",
        lambda w: [
            "-p",
            w.text(
                "typo.py",
                "from rnnzoo import hookimpl\n\n@hookimpl\ndef rnnzoo_cell():\n    return {}\n",
            ),
            "list",
        ],
        2,
        ("implements 'rnnzoo_cell', which is not an rnnzoo hook", "Did you mean 'rnnzoo_cells'"),
    ),
    Case(
        "duplicate-plugin-names",
        lambda w: [
            "-p",
            w.text("one.py", CELL_PLUGIN.replace("NAME", "twin")),
            "-p",
            w.text("two.py", CELL_PLUGIN.replace("NAME", "twin")),
            "list",
        ],
        2,
        ("Two plugins register the cell 'twin'", "one.py'", "two.py'"),
    ),
    Case(
        "plugin-shadows-a-built-in",
        lambda w: ["-p", w.text("mine.py", CELL_PLUGIN.replace("NAME", "lstm")), "list"],
        2,
        ("Two plugins register the cell 'lstm'", "'rnnzoo_plugins.cells.lstm' (built-in)"),
    ),
    Case(
        "plugin-hook-returns-a-list",
        lambda w: [
            "-p",
            w.text(
                "listy.py",
                "from rnnzoo import hookimpl\n\n@hookimpl\ndef rnnzoo_heads():\n    return ['head']\n",
            ),
            "list",
        ],
        2,
        ("returned list from rnnzoo_heads",),
    ),
    Case(
        "plugin-cell-that-is-no-cell",
        lambda w: [
            "-p",
            w.text(
                "notcell.py",
                "from torch import nn\nfrom rnnzoo import hookimpl\n\n@hookimpl\ndef rnnzoo_cells():\n    return {'linear': lambda input_size, hidden_size: nn.Linear(input_size, hidden_size)}\n",
            ),
            "train",
            ADDING,
            *SMALL,
            "model.cell=linear",
            "--run-dir",
            w.tmp / "new",
        ],
        2,
        ("Cell 'linear' built Linear, not an rnnzoo.Cell",),
    ),
]


def check(result: Result, case: Case) -> None:
    assert result.code == case.code, result.output
    assert "Traceback" not in result.output, result.output
    message = result.err.rstrip("\n").split("\n")[-1]
    assert message.startswith("Error: "), result.err
    for fragment in case.says:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_the_table_has_thirty_rows_or_more() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, trained: dict[str, Path]) -> None:
    args = case.args(Workspace(tmp_path, trained))
    check(rnnzoo(*args), case)
    debug = rnnzoo("--debug", *case.args(Workspace(tmp_path / "debug", trained)))
    assert debug.code == case.code, debug.output
    assert ("Traceback (most recent call last)" in debug.err) == case.debug_traceback, debug.err


def test_bf16_on_cpu_falls_back_to_fp32(tmp_path: Path) -> None:
    """bf16 autocast is a CUDA feature here: on the CPU the run says so once and
    trains in fp32, bit for bit the run it would be with trainer.precision=fp32."""
    runs = {}
    for precision in ("bf16", "fp32"):
        run = tmp_path / precision
        overrides = (f"trainer.precision={precision}", "trainer.device=cpu")
        result = rnnzoo("train", ADDING, *SMALL, *overrides, "--run-dir", run)
        assert result.code == 0, result.output
        runs[precision] = (result.err, checkpoint.load(checkpoint.latest(run))["model"])
    warning = "rnnzoo: trainer.precision=bf16 needs CUDA; training in fp32"
    assert runs["bf16"][0].count(warning) == 1
    assert warning not in runs["fp32"][0]
    bf16, fp32 = runs["bf16"][1], runs["fp32"][1]
    assert all(torch.equal(bf16[k], fp32[k]) and bf16[k].dtype == torch.float32 for k in fp32)


def test_eval_prints_its_metrics_when_eval_json_cannot_be_written(
    tmp_path: Path, trained: dict[str, Path]
) -> None:
    """A run folder where eval.json cannot be written (a folder of that name is in
    the way, which stops root too): the metrics are printed all the same, one line
    of warning names the file, and the exit code is 0."""
    run = Workspace(tmp_path, trained).run()
    (run / "eval.json").mkdir()
    result = rnnzoo("eval", run)
    assert result.code == 0, result.output
    printed = dict(line.split() for line in result.out.splitlines())
    assert set(printed) >= {"step", "val/loss", "val/mse", "baseline/mse"}, result.out
    assert float(printed["step"]) == 4
    warning = result.err.strip()
    assert "\n" not in warning and "Traceback" not in warning, result.err
    assert warning.startswith(f"rnnzoo: warning: could not write '{run / 'eval.json'}'"), warning
    assert (run / "eval.json").is_dir()


# -- a write error while saving ---------------------------------------------------

CHECKPOINTS_BECOME_A_FILE = """
from pathlib import Path

from rnnzoo import hookimpl


@hookimpl
def rnnzoo_step_end(run, step):
    if step == 3:  # something else takes the checkpoints folder's place
        folder = Path(run.run_dir) / "checkpoints"
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        folder.write_text("in the way")
"""


def test_checkpoint_folder_that_becomes_unwritable_mid_run(tmp_path: Path) -> None:
    """The checkpoints folder is replaced by a file after the first checkpoint: the
    next save fails with exit code 1 and a message, and what was logged stays."""
    plugin = write(tmp_path / "in_the_way.py", CHECKPOINTS_BECOME_A_FILE)
    run = tmp_path / "run"
    result = rnnzoo("-p", plugin, "train", ADDING, *SMALL, "trainer.log_every=1", "--run-dir", run)
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    message = result.err.strip().splitlines()[-1]
    assert message.startswith(f"Error: Could not write checkpoint '{run / 'checkpoints'}")
    assert "Free disk space or choose a writable --run-dir" in message
    assert "`rnnzoo train --resume` continues from the last one" in message
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "train/loss" in row] == [1, 2, 3, 4]


DISK_FULL = """
set -e
for name in checkpoint metrics; do
    mkdir -p "$1/$name"
    mount -t tmpfs -o size=16k tmpfs "$1/$name"
done
shift
exec "$@"
"""


@pytest.mark.slow
def test_disk_full(tmp_path: Path) -> None:
    """A real full disk (a 16 KiB tmpfs): first while writing a checkpoint, then
    while appending to metrics.jsonl. Both end with exit code 1 and one paragraph."""
    driver = write(
        tmp_path / "driver.py",
        f"""
        import sys
        from rnnzoo.cli import main

        args = {[str(ADDING), *SMALL, "model.hidden_size=32", "trainer.steps=40"]!r}
        for name, extra in (
            ("checkpoint", ["trainer.checkpoint_every=2"]),
            ("metrics", ["trainer.checkpoint_every=100", "trainer.log_every=1"]),
        ):
            print("--", name, file=sys.stderr, flush=True)
            try:
                main(["train", *args, *extra, "--run-dir", sys.argv[1] + "/" + name])
            except SystemExit as exc:
                print("-- exit", exc.code, file=sys.stderr, flush=True)
        """,
    )
    disk = tmp_path / "disk"
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) for a private tmpfs")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [
            unshare,
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            DISK_FULL,
            "sh",
            str(disk),
            sys.executable,
            str(driver),
            str(disk),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if proc.returncode != 0 and "-- checkpoint" not in proc.stderr:  # the driver never ran
        pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()}")
    assert "Traceback" not in proc.stderr, proc.stderr
    parts = proc.stderr.split("-- ")[1:]
    assert [p.split()[0] for p in parts] == ["checkpoint", "exit", "metrics", "exit"], proc.stderr
    checkpoint_error, checkpoint_exit, metrics_error, metrics_exit = parts
    assert checkpoint_exit.split()[1] == metrics_exit.split()[1] == "1", proc.stderr
    assert "Could not write checkpoint" in checkpoint_error
    assert "No space left on device" in checkpoint_error
    assert "rnnzoo train --resume" in checkpoint_error
    assert "No space left on device" in metrics_error
    assert "Free disk space" in metrics_error
    assert "rnnzoo train --resume RUN_DIR" in metrics_error
