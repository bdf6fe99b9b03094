"""The generic trainer: schedules, optimizers, accumulation, early stopping,
devices, checkpoints, and the `rnnzoo train` / `rnnzoo eval` commands end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from jsonl import read_jsonl

from rnnzoo import checkpoint, config
from rnnzoo.cli import main
from rnnzoo.errors import CheckpointError, ConfigError
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer
from rnnzoo.training.device import resolve_device
from rnnzoo.training.evaluate import main_metric, track_best
from rnnzoo.training.optim import lr_at

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = Registry(plugin_manager())
QUIET = ["tracking.wandb_mode=disabled", "trainer.progress=false", "gradflow.every=0"]
SMALL = ["task.length=6", "task.val_size=32", "model.hidden_size=8", "trainer.batch_size=8"]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest, and identically in every process, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainer(run_dir: Path, *overrides: str) -> Trainer:
    return Trainer(config.load(None, [*QUIET, *SMALL, *overrides]), REGISTRY, run_dir)


def optim(**values: object):
    return config.load(None, [f"optim.{k}={v}" for k, v in values.items()]).optim


# -- learning rate and optimizers ---------------------------------------------


def test_lr_warmup_then_constant():
    cfg = optim(lr=0.1, warmup_steps=4)
    assert [lr_at(s, cfg, 10) for s in range(6)] == pytest.approx(
        [0.025, 0.05, 0.075, 0.1, 0.1, 0.1]
    )


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_decay_after_warmup(schedule):
    cfg = optim(lr=1.0, warmup_steps=2, schedule=schedule, min_lr_ratio=0.1)
    total = 12
    for step in range(2, total):
        progress = (step - 2) / (total - 2)
        shape = 1 - progress if schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        assert lr_at(step, cfg, total) == pytest.approx(0.1 + 0.9 * shape)
    assert lr_at(1, cfg, total) == pytest.approx(1.0)  # the end of warmup
    assert lr_at(total, cfg, total) == pytest.approx(0.1)  # the floor
    assert lr_at(total + 5, cfg, total) == pytest.approx(0.1)


def test_the_optimizer_uses_the_scheduled_rate(tmp_path):
    t = trainer(
        tmp_path / "run",
        "optim.lr=0.01",
        "optim.warmup_steps=2",
        "optim.schedule=cosine",
        "trainer.steps=6",
        "trainer.log_every=1",
    )
    t.fit()
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "train/lr" in r]
    assert [r["train/lr"] for r in rows] == pytest.approx(
        [lr_at(s, t.cfg.optim, 6) for s in range(6)]
    )


@pytest.mark.parametrize(
    "name, cls, settings",
    [
        ("sgd", torch.optim.SGD, {"momentum": 0.9, "weight_decay": 0.01}),
        ("adam", torch.optim.Adam, {"betas": (0.8, 0.99), "weight_decay": 0.0}),
        ("adamw", torch.optim.AdamW, {"betas": (0.9, 0.95), "weight_decay": 0.1}),
        ("rmsprop", torch.optim.RMSprop, {"momentum": 0.5, "weight_decay": 0.0}),
    ],
)
def test_optimizers(tmp_path, name, cls, settings):
    overrides = [f"optim.name={name}", "optim.lr=0.05"]
    for key, value in settings.items():
        if key == "betas":
            overrides += [f"optim.beta1={value[0]}", f"optim.beta2={value[1]}"]
        else:
            overrides.append(f"optim.{key}={value}")
    t = trainer(tmp_path / "run", *overrides)
    assert type(t.optimizer) is cls
    group = t.optimizer.param_groups[0]
    assert group["lr"] == 0.05
    for key, value in settings.items():
        assert group[key] == pytest.approx(value)
    # one step of the trainer is one step of that optimizer
    t.forward_backward(t.task.train_batch(0, 8))
    before = [p.detach().clone() for p in t.model.parameters()]
    reference = cls([p.detach().clone().requires_grad_() for p in t.model.parameters()], lr=0.05)
    for ref, p in zip(reference.param_groups[0]["params"], t.model.parameters(), strict=True):
        ref.grad = p.grad.clone()
    reference.param_groups[0].update(settings)
    t.optimizer_step(0.0, {})
    reference.step()
    for ref, p, old in zip(
        reference.param_groups[0]["params"], t.model.parameters(), before, strict=True
    ):
        assert not torch.equal(p.detach(), old)
        torch.testing.assert_close(p.detach(), ref.detach())


@pytest.mark.parametrize(
    "override, match",
    [
        ("optim.name=lbfgs", "optim.name"),
        ("optim.schedule=step", "optim.schedule"),
        ("optim.lr=0", "optim.lr"),
        ("optim.min_lr_ratio=2", "min_lr_ratio"),
        ("trainer.grad_accum=0", "trainer.grad_accum"),
        ("trainer.keep_checkpoints=0", "trainer.keep_checkpoints"),
        ("trainer.eval_batches=0", "trainer.eval_batches"),
    ],
)
def test_bad_settings_fail_before_anything_is_written(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        trainer(tmp_path / "run", override).fit()
    assert not (tmp_path / "run").exists()


# -- gradient accumulation --------------------------------------------------------


def test_two_accumulated_batches_equal_one_batch_of_twice_the_size(tmp_path):
    """For a per-sequence mean loss: accumulating 2 x B gives the gradient of 1 x 2B."""
    accum = trainer(tmp_path / "a", "trainer.grad_accum=2")
    whole = trainer(tmp_path / "b")
    first, second = accum.task.train_batch(0, 8), accum.task.train_batch(1, 8)
    losses = accum.forward_backward(first, 2) + accum.forward_backward(second, 2)
    both = type(first)(
        inputs=torch.cat([first.inputs, second.inputs]),
        targets=torch.cat([first.targets, second.targets]),
    )
    loss = whole.forward_backward(both, 1)
    assert losses == pytest.approx(loss, rel=1e-5)
    for a, b in zip(accum.model.parameters(), whole.model.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-7, rtol=1e-5)


def test_accumulation_reads_consecutive_batches_and_steps_once(tmp_path):
    t = trainer(tmp_path / "run", "trainer.grad_accum=3", "trainer.steps=2")
    got = [b.inputs for b in t.batches(1)]
    assert len(got) == 3
    for micro, inputs in enumerate(got):
        assert torch.equal(inputs, t.task.train_batch(3 + micro, 8).inputs)
    t.fit()
    state = t.optimizer.state[next(t.model.parameters())]
    assert int(state["step"]) == 2


# -- evaluation and early stopping --------------------------------------------------


def test_early_stopping_follows_the_metric(tmp_path):
    t = trainer(tmp_path / "run", "trainer.early_stop_patience=2")
    assert main_metric(t.cfg, t.task) == ("val/mse", "min")
    assert [track_best(t.state, {"val/mse": v}, t.cfg, t.task) for v in (0.5, 0.4, 0.45, 0.41)] == [
        False,
        False,
        False,
        True,
    ]
    assert t.state.best == 0.4
    order = trainer(tmp_path / "o", "task.name=temporal_order", "task.length=10")
    assert main_metric(order.cfg, order.task) == ("val/acc", "max")
    by_loss = trainer(
        tmp_path / "l",
        "task.name=temporal_order",
        "task.length=10",
        "trainer.early_stop_metric=val/loss",
    )
    assert main_metric(by_loss.cfg, by_loss.task) == ("val/loss", "min")


def test_early_stopping_ends_a_run_that_does_not_improve(tmp_path):
    """An update far below float resolution leaves the model, and so the
    validation MSE, unchanged: the run stops after `patience` evaluations."""
    t = trainer(
        tmp_path / "run",
        "optim.lr=1e-30",
        "trainer.steps=50",
        "trainer.eval_every=2",
        "trainer.early_stop_patience=2",
    )
    summary = t.fit()
    assert summary["step"] == 6
    evals = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "val/mse" in r]
    assert [r["step"] for r in evals] == [2, 4, 6]
    assert summary["best/val/mse"] == evals[0]["val/mse"]
    assert checkpoint.list_checkpoints(tmp_path / "run")[-1].name == "ckpt-00000006.pt"


def test_same_seed_same_run(tmp_path):
    runs = []
    for name in ("a", "b"):
        trainer(tmp_path / name, "model.dropout=0.3", "model.num_layers=2", "trainer.steps=4").fit()
        rows = read_jsonl(tmp_path / name / "metrics.jsonl")
        runs.append([{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows])
    assert runs[0] == runs[1]


# -- devices ------------------------------------------------------------------------


def test_device_choice(tmp_path):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    t = trainer(tmp_path / "run", "trainer.device=cpu")
    assert {p.device.type for p in t.model.parameters()} == {"cpu"}
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="trainer.device"):
        resolve_device("abacus")


@CUDA
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_cuda(tmp_path, precision):
    t = trainer(
        tmp_path / "run", "trainer.device=cuda", f"trainer.precision={precision}", "trainer.steps=3"
    )
    summary = t.fit()
    assert {p.device.type for p in t.model.parameters()} == {"cuda"}
    assert math.isfinite(summary["val/mse"])


# -- checkpoints ------------------------------------------------------------------


def test_checkpoints_keep_the_newest_k(tmp_path):
    trainer(
        tmp_path / "run",
        "trainer.steps=10",
        "trainer.checkpoint_every=2",
        "trainer.keep_checkpoints=2",
    ).fit()
    names = [p.name for p in checkpoint.list_checkpoints(tmp_path / "run")]
    assert names == ["ckpt-00000008.pt", "ckpt-00000010.pt"]
    state = checkpoint.load(tmp_path / "run" / "checkpoints" / names[-1])
    assert state["step"] == 10


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    good = checkpoint.save(tmp_path, 1, {"step": 1, "model": {"w": torch.ones(3)}}, keep=2)
    # something torch.save cannot write: the write fails halfway
    with pytest.raises(Exception):  # noqa: B017
        checkpoint.save(
            tmp_path, 2, {"step": 2, "model": {"w": torch.ones(3)}, "x": lambda: 0}, keep=2
        )
    assert checkpoint.list_checkpoints(tmp_path) == [good]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [good.name]
    assert torch.equal(checkpoint.load(good)["model"]["w"], torch.ones(3))


def test_broken_or_foreign_checkpoints_are_refused(tmp_path):
    path = checkpoint.save(tmp_path, 1, {"step": 1, "model": {"w": torch.ones(3)}}, keep=2)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path)
    # weights_only=True: a pickled object other than tensors and containers is refused
    torch.save({"step": 1, "model": {}, "obj": Path("x")}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        checkpoint.load(path)
    with pytest.raises(CheckpointError, match="No checkpoint"):
        checkpoint.latest(tmp_path / "elsewhere")


# -- the commands end to end ----------------------------------------------------------


def test_train_adding_then_eval(tmp_path, capsys):
    """`rnnzoo train experiments/adding.yaml`, shortened, learns: the validation MSE
    ends well below the 1/6 of always predicting 1. Then `rnnzoo eval` reports the
    same numbers from the last checkpoint."""
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from rnnzoo.cli import main; main()",
            "train",
            str(ROOT / "experiments" / "adding.yaml"),
            "task.length=10",
            "task.val_size=256",
            "model.hidden_size=32",
            "optim.lr=0.01",
            "trainer.steps=200",
            "trainer.eval_every=100",
            "gradflow.every=100",
            "trainer.progress=false",
            "--run-dir",
            str(run),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "val/mse" in done.stdout and "baseline/mse" in done.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["baseline/mse"] == pytest.approx(1 / 6)
    assert summary["val/mse"] < 0.1
    assert summary["step"] == 200
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "gradflow.jsonl"):
        assert (run / name).is_file(), name
    assert checkpoint.list_checkpoints(run)

    capsys.readouterr()
    main(["eval", str(run)])
    out = capsys.readouterr().out
    evaluated = json.loads((run / "eval.json").read_text())
    assert evaluated["step"] == 200
    assert evaluated["val/mse"] == pytest.approx(summary["val/mse"], rel=1e-6)
    assert evaluated["baseline/mse"] == pytest.approx(1 / 6)
    assert f"{evaluated['val/mse']:.6g}" in out


def test_eval_of_a_folder_without_a_run_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "not an rnnzoo run folder" in capsys.readouterr().err
