"""Equal budgets (trainer.max_time, trainer.max_tokens), the best checkpoint, and
what a batch job's log file shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_run import rnnzoo

from rnnzoo import checkpoint

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"
S = [
    "task.length=10",
    "task.val_size=32",
    "model.hidden_size=8",
    "trainer.steps=40",
    "trainer.batch_size=8",
    "trainer.log_every=5",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=10",
    "trainer.progress=false",
    "gradflow.every=0",
    "tracking.wandb_mode=disabled",
]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def test_a_token_budget_ends_the_run_with_an_evaluation_and_a_checkpoint(tmp_path: Path) -> None:
    """8 sequences of 10 steps make 80 tokens a step: 1000 tokens end it at step 13."""
    run = tmp_path / "run"
    result = rnnzoo("train", ADDING, *S, "trainer.max_tokens=1000", "--run-dir", run)
    assert result.code == 0, result.output
    done = summary(run)
    assert done["status"] == "budget_reached" and done["step"] == 13
    assert done["train/tokens"] == 13 * 80
    assert checkpoint.step_of(checkpoint.list_checkpoints(run)[-1]) == 13
    evals = [json.loads(x)["step"] for x in (run / "metrics.jsonl").open() if "val/mse" in x]
    assert evals[-1] == 13
    again = rnnzoo("train", "--resume", run)
    assert again.code == 0 and "used up its budget at step 13" in again.err
    more = rnnzoo("train", "--resume", run, "trainer.max_tokens=2000")
    assert more.code == 0, more.output
    assert summary(run)["step"] == 25 and summary(run)["train/tokens"] == 25 * 80


def test_a_time_budget_ends_the_run_cleanly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = rnnzoo(
        "train", ADDING, *S, "trainer.steps=100000", "trainer.max_time=3", "--run-dir", run
    )
    assert result.code == 0, result.output
    done = summary(run)
    assert done["status"] == "budget_reached" and 0 < done["step"] < 100000
    assert done["time/train_s"] >= 3
    assert checkpoint.step_of(checkpoint.list_checkpoints(run)[-1]) == done["step"]


def test_best_pt_holds_the_best_evaluation(tmp_path: Path) -> None:
    """best.pt stays beside the rotating checkpoints and holds the weights of the
    evaluation with the best main metric."""
    run = tmp_path / "run"
    args = [*S, "trainer.keep_checkpoints=1", "optim.lr=0.02"]
    assert rnnzoo("train", ADDING, *args, "--run-dir", run).code == 0
    evals = [json.loads(x) for x in (run / "metrics.jsonl").open() if "val/mse" in x]
    best = min(evals, key=lambda r: r["val/mse"])
    saved = checkpoint.load(run / "checkpoints" / "best.pt")
    assert saved["step"] == best["step"]
    assert saved["best"] == summary(run)["best/val/mse"] == best["val/mse"]
    assert [p.name for p in checkpoint.list_checkpoints(run)] == ["ckpt-00000040.pt"]
    if best["step"] == 40:
        final = checkpoint.load(checkpoint.list_checkpoints(run)[-1])["model"]
        for name, value in saved["model"].items():
            assert torch.equal(value, final[name])


def train_into_a_log(tmp_path: Path, *extra: str) -> str:
    """``rnnzoo train`` with stdout and stderr going to a file, as in a batch job."""
    log = tmp_path / "out.log"
    with open(log, "w") as f:
        subprocess.run(
            [sys.executable, "-m", "rnnzoo", "train", str(ADDING), *S, *extra,
             "--run-dir", str(tmp_path / "run")],
            stdout=f, stderr=subprocess.STDOUT, check=True, timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    return log.read_text()


def test_a_batch_job_log_gets_plain_lines(tmp_path: Path) -> None:
    text = train_into_a_log(tmp_path, "trainer.progress=true")
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0] == f"rnnzoo: run folder {tmp_path / 'run'}"
    progress = [line for line in lines if line.startswith("rnnzoo: step ")]
    assert progress and progress[-1].startswith("rnnzoo: step 40/40  loss ")
    assert "tokens/s  eta 0m00s" in progress[-1]


@pytest.mark.parametrize("progress", ["false"])
def test_the_run_folder_is_named_at_the_start_in_every_mode(tmp_path: Path, progress: str) -> None:
    text = train_into_a_log(tmp_path, f"trainer.progress={progress}")
    assert text.splitlines()[0] == f"rnnzoo: run folder {tmp_path / 'run'}"
    assert not [line for line in text.splitlines() if line.startswith("rnnzoo: step ")]
