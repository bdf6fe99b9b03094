"""A run that is interrupted and resumed ends bit for bit where the uninterrupted
run ends: weights, optimizer, logged values, RNG, data position, carried state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from jsonl import read_jsonl
from test_tbptt import registry_with_stream
from wandb_records import read_run, run_files

from rnnzoo import checkpoint, config
from rnnzoo.cli import main
from rnnzoo.training import Trainer

ROOT = Path(__file__).resolve().parents[1]

STOP_PLUGIN = """
import os
import signal

from rnnzoo import hookimpl


@hookimpl
def rnnzoo_step_end(run, step, metrics):
    if step == {step}:
        os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would
"""


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest, and identically in every process, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def logged(path: Path) -> list[dict]:
    """The logged values without wall-clock measurements."""
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in read_jsonl(path)]


def final_state(run: Path) -> dict:
    return checkpoint.load(checkpoint.list_checkpoints(run)[-1])


def assert_same_tensors(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tensors(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where  # NaN equals NaN here


def assert_same_run(resumed: Path, straight: Path) -> None:
    a, b = final_state(resumed), final_state(straight)
    for key in ("step", "model", "optimizer", "rng", "carried", "counters", "best", "last_eval"):
        assert_same_tensors(a[key], b[key], key)
    assert logged(resumed / "metrics.jsonl") == logged(straight / "metrics.jsonl")
    summaries = [json.loads((r / "summary.json").read_text()) for r in (resumed, straight)]
    for s in summaries:
        for key in ("time/wall_s", "time/train_s"):  # wall-clock measurements
            s.pop(key)
    assert summaries[0] == summaries[1]


def test_interrupted_with_ctrl_c_and_resumed(tmp_path, monkeypatch):
    """2 layers with dropout (the RNG matters), warmup and cosine decay, clipping,
    gradient-flow probes and W&B; Ctrl-C arrives in the middle of a logging window
    and between checkpoints."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    overrides = [
        "task.length=6",
        "task.val_size=32",
        "model.hidden_size=8",
        "model.num_layers=2",
        "model.dropout=0.3",
        "controllers.clip_norm.max_norm=0.5",
        "optim.warmup_steps=3",
        "optim.schedule=cosine",
        "trainer.batch_size=8",
        "trainer.steps=12",
        "trainer.log_every=2",
        "trainer.eval_every=4",
        "trainer.checkpoint_every=5",
        "trainer.progress=false",
        "gradflow.every=3",
        "gradflow.batch_size=4",
    ]
    experiment = str(ROOT / "experiments" / "adding.yaml")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    main(["train", experiment, *overrides, "--run-dir", str(straight)])

    plugin = tmp_path / "stop_at_7.py"
    plugin.write_text(STOP_PLUGIN.format(step=7))
    done = subprocess.run(
        [sys.executable, "-c", "from rnnzoo.cli import main; main()"]
        + ["-p", str(plugin), "train", experiment, *overrides, "--run-dir", str(resumed)],
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 130, done.stderr
    assert "stopping after this step" in done.stderr
    assert "rnnzoo train --resume" in done.stderr
    assert [p.name for p in checkpoint.list_checkpoints(resumed)] == [
        "ckpt-00000005.pt",
        "ckpt-00000007.pt",
    ]
    assert max(r["step"] for r in read_jsonl(resumed / "metrics.jsonl")) <= 7
    assert not (resumed / "summary.json").exists()

    main(["train", "--resume", str(resumed)])
    assert_same_run(resumed, straight)
    assert [json.loads(line)["step"] for line in (resumed / "gradflow.jsonl").open()] == [
        3,
        6,
        9,
        12,
    ]

    # one W&B run, continued in one offline folder: both parts carry the run id of run.json
    run_id = json.loads((resumed / "run.json").read_text())["run_id"]
    files = run_files(resumed)
    assert len(list((resumed / "wandb").glob("offline-run-*"))) == 1
    assert [f.name for f in files] == [f"run-{run_id}.wandb", f"run-{run_id}.part2.wandb"]
    assert {read_run(f).run_id for f in files} == {run_id}
    steps = [h["trainer/step"] for f in files for h in read_run(f).history if "train/loss" in h]
    assert set(steps) == {2, 4, 6, 8, 10, 12}


def test_resumed_with_more_steps_continues_a_stream(tmp_path):
    """Train 8 steps, then `--resume` with trainer.steps=12: the same as 12 steps
    at once, including the truncated-BPTT state carried from batch to batch."""
    registry = registry_with_stream()
    overrides = [
        "task.name=echo_stream",
        "model.head=per_token",
        "model.input_dim=4",
        "model.hidden_size=6",
        "model.num_layers=2",
        "model.dropout=0.2",
        "controllers.tbptt.k1=3",
        "controllers.tbptt.k2=5",
        "trainer.batch_size=3",
        "trainer.log_every=2",
        "trainer.eval_every=4",
        "trainer.checkpoint_every=3",
        "trainer.progress=false",
        "gradflow.every=0",
        "tracking.wandb_mode=disabled",
    ]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    Trainer(config.load(None, [*overrides, "trainer.steps=12"]), registry, straight).fit()
    Trainer(config.load(None, [*overrides, "trainer.steps=8"]), registry, resumed).fit()
    assert final_state(resumed)["carried"] is not None
    more = config.load(resumed / "config.yaml", ["trainer.steps=12"])
    Trainer(more, registry, resumed, resume=True).fit()
    assert_same_run(resumed, straight)


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    args = [
        "task.length=5",
        "task.val_size=16",
        "model.hidden_size=4",
        "trainer.batch_size=4",
        "trainer.steps=4",
        "trainer.progress=false",
        "gradflow.every=0",
        "tracking.wandb_mode=disabled",
    ]
    registry = registry_with_stream()
    run = tmp_path / "run"
    first = Trainer(config.load(None, args), registry, run).fit()
    rows = read_jsonl(run / "metrics.jsonl")
    again = Trainer(config.load(run / "config.yaml"), registry, run, resume=True).fit()
    for key in ("time/wall_s", "time/train_s"):  # wall-clock measurements
        first.pop(key)
        again.pop(key)
    assert again == first
    assert read_jsonl(run / "metrics.jsonl") == rows


def test_resume_needs_a_run_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "not an rnnzoo run folder" in capsys.readouterr().err
