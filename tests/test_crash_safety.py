"""Training that goes wrong loses nothing it finished.

Killed with SIGKILL, a run leaves checkpoints that load, and ``rnnzoo train
--resume`` continues to the very same weights, metrics and summary as a run that
was never interrupted. NaN or Inf in the loss or the gradients skips, stops or
raises as ``trainer.on_nonfinite`` says, and a checkpoint with non-finite weights
is never written.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_run import rnnzoo, write

from rnnzoo import checkpoint

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"
STEPS = 150
#: small, but with everything a resumed run must restore: Adam moments, dropout's
#: random numbers, gradient clipping, a cosine schedule, evaluations with early-stop
#: bookkeeping, logging windows that straddle checkpoints, and gradient-flow probes
OVERRIDES = [
    "task.length=8",
    "task.val_size=32",
    "model.hidden_size=8",
    "model.num_layers=2",
    "model.dropout=0.2",
    "optim.schedule=cosine",
    f"trainer.steps={STEPS}",
    "trainer.batch_size=8",
    "trainer.log_every=3",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=5",
    "trainer.keep_checkpoints=2",
    "trainer.progress=false",
    "trainer.device=cpu",
    "gradflow.every=25",
    "gradflow.batch_size=4",
    "tracking.wandb_mode=disabled",
]
#: one CPU thread, as in the test process (conftest.py), so float sums agree bit for bit
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "WANDB_MODE": "disabled",
    "RNNZOO_DISABLE_PLUGIN_AUTOLOAD": "1",
}
#: values that measure time, not training
CLOCKS = ("perf/", "time/")


def script() -> list[str]:
    return [sys.executable, "-c", "from rnnzoo.cli import main; main()"]


def rows(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        {k: v for k, v in json.loads(line).items() if not k.startswith(CLOCKS)} for line in lines
    ]


def summary(run: Path) -> dict[str, Any]:
    data = json.loads((run / "summary.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith(CLOCKS)}


def wait_for(condition: Any, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(
                f"training ended before it could be killed (code {proc.returncode}):\n{out}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("training made no progress")
        time.sleep(0.005)


def logged_after(run: Path, step: int) -> bool:
    """Whether metrics.jsonl holds a row logged after ``step``."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return False
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line)["step"] > step:
                return True
        except ValueError:
            continue
    return False


@pytest.mark.slow
def test_sigkill_then_resume_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    # the run that is never interrupted, in this process
    whole = tmp_path / "whole"
    result = rnnzoo("train", ADDING, *OVERRIDES, "--run-dir", whole)
    assert result.code == 0, result.output

    # the same run in its own process, killed with SIGKILL after its first checkpoint
    # and after it logged past that checkpoint, so there is work to redo
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*script(), "train", str(ADDING), *OVERRIDES, "--run-dir", str(killed)],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: checkpoint.list_checkpoints(killed), proc)
        wait_for(lambda: logged_after(killed, steps_of(killed)[0]), proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists(), "the run finished before the kill"

    # what the kill left: the newest checkpoint is whole and finite, a temp file of
    # a write in flight (if any) is never taken for a checkpoint
    saved = checkpoint.list_checkpoints(killed)
    assert saved and all(checkpoint.PATTERN.match(p.name) for p in saved)
    latest = checkpoint.latest(killed)
    assert latest == saved[-1]
    state = torch.load(latest, map_location="cpu", weights_only=True)
    assert 0 < state["step"] < STEPS
    assert all(torch.isfinite(t).all() for t in state["model"].values())

    result = rnnzoo("train", "--resume", killed)
    assert result.code == 0, result.output
    assert not list((killed / "checkpoints").glob(".ckpt-*")), "a temp file was left behind"

    # bit for bit: the last checkpoint (weights and optimizer), every logged value
    # and the summary
    a = torch.load(checkpoint.latest(whole), map_location="cpu", weights_only=True)
    b = torch.load(checkpoint.latest(killed), map_location="cpu", weights_only=True)
    assert a["step"] == b["step"] == STEPS
    assert a["model"].keys() == b["model"].keys()
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    for key, moments in a["optimizer"]["state"].items():
        for name, tensor in moments.items():
            assert torch.equal(tensor, b["optimizer"]["state"][key][name]), (key, name)
    assert rows(whole / "metrics.jsonl") == rows(killed / "metrics.jsonl")
    assert rows(whole / "gradflow.jsonl") == rows(killed / "gradflow.jsonl")
    assert summary(whole) == summary(killed)
    assert math.isfinite(summary(killed)["val/mse"])


WRITER = """
import sys
import torch
from pathlib import Path
from rnnzoo import checkpoint

run = Path(sys.argv[1])
step = 0
while True:
    step += 1
    weights = torch.full((4_000_000,), float(step))  # 16 MB: a write takes a while
    checkpoint.save(run, step, {"step": step, "model": {"w": weights}}, keep=3)
"""


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_checkpoint_write(tmp_path: Path) -> None:
    """Killed while the temp file of the next checkpoint is being written, the
    earlier checkpoints are intact; the next save clears the orphaned temp file."""
    run = tmp_path / "run"
    folder = run / "checkpoints"

    def writing() -> bool:
        return bool(checkpoint.list_checkpoints(run)) and any(folder.glob(".ckpt-*.tmp"))

    for _attempt in range(3):  # the kill must land inside a write
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(run)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for(writing, proc)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
        if list(folder.glob(".ckpt-*.tmp")):
            break
    orphans = list(folder.glob(".ckpt-*.tmp"))
    assert orphans, "no kill landed inside a checkpoint write"

    saved = checkpoint.list_checkpoints(run)
    assert saved and len(saved) <= 3
    for path in saved:
        state = checkpoint.load(path)
        assert torch.equal(state["model"]["w"], torch.full((4_000_000,), float(state["step"])))
    assert checkpoint.latest(run) == saved[-1]

    step = int(checkpoint.load(saved[-1])["step"]) + 1
    checkpoint.save(run, step, {"step": step, "model": {"w": torch.zeros(1)}}, keep=3)
    assert not list(folder.glob(".ckpt-*.tmp"))
    assert checkpoint.load(checkpoint.latest(run))["step"] == step


# -- non-finite values ---------------------------------------------------------------

SMALL = (
    "task.length=6",
    "task.val_size=16",
    "model.hidden_size=4",
    "model.cell=elman",
    "trainer.steps=8",
    "trainer.batch_size=4",
    "trainer.log_every=1",
    "trainer.checkpoint_every=1",
    "trainer.keep_checkpoints=20",
    "trainer.progress=false",
    "gradflow.every=0",
    "tracking.wandb_mode=disabled",
)
TROUBLE = """
\"\"\"Real non-finite values at known steps: a task with corrupt batches, a tanh whose
hand-written derivative overflows, and a controller that blows the gradient up.\"\"\"

import torch

from rnnzoo import Activation, GradController, hookimpl
from rnnzoo_plugins.tasks.synthetic import AddingTask


class CorruptAdding(AddingTask):
    \"\"\"The adding problem; training batch i has a NaN target if i is in
    ``nan_targets`` and input values of +-1e6 if i is in ``spikes``.\"\"\"

    def __init__(
        self,
        seed: int = 0,
        length: int = 50,
        val_size: int = 1000,
        nan_targets: list[int] | None = None,
        spikes: list[int] | None = None,
    ) -> None:
        super().__init__(seed, length, val_size)
        self.nan_targets, self.spikes = nan_targets or [], spikes or []

    def train_batch(self, index, batch_size):
        batch = super().train_batch(index, batch_size)
        if index in self.nan_targets:
            batch.targets[0] = float("nan")
        if index in self.spikes:
            batch.inputs[0, 0, 0], batch.inputs[1, 0, 0] = 1e6, -1e6
        return batch


class _NaiveTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return torch.tanh(z)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        e = torch.exp(2 * z)  # inf above z = 44, and inf / inf is NaN
        return grad * 4 * e / (e + 1) ** 2


class NaiveTanh(Activation):
    \"\"\"tanh with the textbook derivative 4 e^2z / (e^2z + 1)^2, which overflows.\"\"\"

    def function(self, z):
        return _NaiveTanh.apply(z)


class Amplify(GradController):
    \"\"\"Multiplies every gradient by ``factor`` from its ``start``-th call on.\"\"\"

    def __init__(self, factor: float = 1.0, start: int = 1) -> None:
        self.factor, self.start, self.calls = factor, start, 0

    def after_backward(self, model):
        self.calls += 1
        if self.calls >= self.start:
            for p in model.parameters():
                p.grad.mul_(self.factor)
        return {}


@hookimpl
def rnnzoo_tasks():
    return {"corrupt_adding": CorruptAdding}


@hookimpl
def rnnzoo_activations():
    return {"naive_tanh": NaiveTanh}


@hookimpl
def rnnzoo_grad_controllers():
    return {"amplify": Amplify}
"""


@pytest.fixture()
def trouble(tmp_path: Path) -> Path:
    return write(tmp_path / "trouble.py", TROUBLE)


def steps_of(run: Path) -> list[int]:
    return [int(checkpoint.PATTERN.match(p.name)[1]) for p in checkpoint.list_checkpoints(run)]


def weights(run: Path, step: int) -> dict[str, torch.Tensor]:
    state = checkpoint.load(checkpoint.checkpoint_path(run, step))
    return {
        **state["model"],
        **{f"opt{k}": v["exp_avg"] for k, v in state["optimizer"]["state"].items()},
    }


def assert_all_finite(run: Path) -> None:
    for step in steps_of(run):
        for name, tensor in weights(run, step).items():
            assert torch.isfinite(tensor).all(), f"non-finite '{name}' in checkpoint {step}"


def test_nan_loss_skips_the_step_and_reports_it(tmp_path: Path, trouble: Path) -> None:
    run = tmp_path / "run"
    result = rnnzoo(
        "-p",
        trouble,
        "train",
        ADDING,
        *SMALL,
        "task.name=corrupt_adding",
        "task.nan_targets=[2,5]",
        "--run-dir",
        run,
    )
    assert result.code == 0, result.output
    for step in (3, 6):
        assert (
            f"rnnzoo: step {step}: the loss is not finite (NaN or Inf); the step was skipped"
            in result.err
        )
    assert result.err.count("not finite") == 2
    assert summary(run)["train/nonfinite_steps"] == 2
    logged = [r for r in rows(run / "metrics.jsonl") if "train/nonfinite_steps" in r]
    assert [r["train/nonfinite_steps"] for r in logged] == [0, 0, 1, 1, 1, 2, 2, 2]
    # a dropped step changes nothing: weights and Adam moments as before it
    assert_all_finite(run)
    for skipped in (3, 6):
        before, after = weights(run, skipped - 1), weights(run, skipped)
        assert all(torch.equal(before[k], after[k]) for k in before)
        following = weights(run, skipped + 1)
        assert not all(torch.equal(after[k], following[k]) for k in after)


def test_nonfinite_gradient_names_the_parameter(tmp_path: Path, trouble: Path) -> None:
    run = tmp_path / "run"
    result = rnnzoo(
        "-p",
        trouble,
        "train",
        ADDING,
        *SMALL,
        "task.name=corrupt_adding",
        "task.spikes=[2]",
        "model.activation=naive_tanh",
        "--run-dir",
        run,
    )
    assert result.code == 0, result.output
    assert (
        "rnnzoo: step 3: the gradient of 'recurrence.cells.0.weight_ih' is not finite "
        "(NaN or Inf); the step was skipped"
    ) in result.err
    assert summary(run)["train/nonfinite_steps"] == 1
    assert math.isfinite(summary(run)["val/mse"])
    assert_all_finite(run)


def test_on_nonfinite_raise_stops_with_exit_code_1(tmp_path: Path, trouble: Path) -> None:
    run = tmp_path / "run"
    result = rnnzoo(
        "-p",
        trouble,
        "train",
        ADDING,
        *SMALL,
        "task.name=corrupt_adding",
        "task.spikes=[2]",
        "model.activation=naive_tanh",
        "trainer.on_nonfinite=raise",
        "--run-dir",
        run,
    )
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    assert result.err.strip().splitlines()[-1] == (
        "Error: Training stopped at step 3: the gradient of 'recurrence.cells.0.weight_ih' is "
        "not finite (NaN or Inf); trainer.on_nonfinite=raise. Lower optim.lr, add "
        "controllers.clip_norm, or set trainer.on_nonfinite=skip."
    )
    assert steps_of(run) == [1, 2]
    assert_all_finite(run)


def test_on_nonfinite_stop_ends_the_run_cleanly(tmp_path: Path, trouble: Path) -> None:
    run = tmp_path / "run"
    result = rnnzoo(
        "-p",
        trouble,
        "train",
        ADDING,
        *SMALL,
        "task.name=corrupt_adding",
        "task.spikes=[2]",
        "model.activation=naive_tanh",
        "trainer.on_nonfinite=stop",
        "--run-dir",
        run,
    )
    assert result.code == 3, result.output  # a diverged run is no success
    assert "stopping (trainer.on_nonfinite=stop)" in result.err
    assert summary(run)["status"] == "diverged"
    assert summary(run)["step"] == 3
    assert steps_of(run) == [1, 2]  # step 3 was not finite: no checkpoint of it
    assert_all_finite(run)


def test_skip_stops_after_max_nonfinite_in_a_row(tmp_path: Path, trouble: Path) -> None:
    """Steps 2, 4, 5 and 6 are bad: the run of three in a row ends training at step 6;
    the lone bad step 2 does not count towards it."""
    run = tmp_path / "run"
    result = rnnzoo(
        "-p",
        trouble,
        "train",
        ADDING,
        *SMALL,
        "task.name=corrupt_adding",
        "task.spikes=[1,3,4,5]",
        "model.activation=naive_tanh",
        "trainer.max_nonfinite=3",
        "--run-dir",
        run,
    )
    assert result.code == 3, result.output  # a diverged run is no success
    assert "3 non-finite steps in a row; stopping" in result.err
    assert [
        line.split(":")[1].strip() for line in result.err.splitlines() if "not finite" in line
    ] == ["step 2", "step 4", "step 5", "step 6"]
    assert summary(run)["step"] == 6
    assert summary(run)["train/nonfinite_steps"] == 4


def test_a_checkpoint_with_nonfinite_weights_is_never_written(
    tmp_path: Path, trouble: Path
) -> None:
    """A controller turns the gradient into inf after the trainer's check at step 3:
    the weights become inf, the checkpoint of step 3 is refused, the one of step 2
    stays, and the run resumes from it."""
    run = tmp_path / "run"
    result = rnnzoo(
        "-p",
        trouble,
        "train",
        ADDING,
        *SMALL,
        "controllers.amplify.factor=1e39",
        "controllers.amplify.start=3",
        "--run-dir",
        run,
    )
    assert result.code == 1, result.output
    message = result.err.strip().splitlines()[-1]
    assert message.startswith("Error: Refusing to write a checkpoint at step 3: parameter '")
    assert "is not finite. The previous checkpoint is intact" in message
    assert steps_of(run) == [1, 2]
    assert not list((run / "checkpoints").glob(".ckpt-*"))
    assert_all_finite(run)

    resumed = rnnzoo("-p", trouble, "train", "--resume", run, "controllers.amplify=null")
    assert resumed.code == 0, resumed.output
    assert summary(run)["step"] == 8
    assert_all_finite(run)


EXPLODING = (
    "task.length=20",
    "task.val_size=32",
    "model.cell=elman",
    "model.activation=relu",
    "model.cell_args.init_scale=4.0",
    "model.hidden_size=16",
    "optim.name=sgd",
    "optim.lr=0.01",
    "trainer.steps=40",
    "trainer.batch_size=8",
    "trainer.log_every=1",
    "trainer.eval_every=20",
    "trainer.checkpoint_every=20",
    "trainer.progress=false",
    "gradflow.every=0",
    "tracking.wandb_mode=disabled",
)


def test_exploding_gradient_is_visible_and_clipping_survives_it(tmp_path: Path) -> None:
    """The lecture's ReLU case: an Elman ReLU network with a large recurrent matrix.
    Unclipped, grad/norm_preclip climbs by orders of magnitude until the gradient
    overflows; with clip_norm the same run trains on with finite values."""
    wild, tame = tmp_path / "wild", tmp_path / "tame"
    result = rnnzoo("train", ADDING, *EXPLODING, "controllers.clip_norm=null", "--run-dir", wild)
    assert result.code == 3, result.output  # it diverged
    logged = [r for r in rows(wild / "metrics.jsonl") if "train/loss" in r]
    norms = [r["grad/norm_preclip"] for r in logged if "grad/norm_preclip" in r]
    assert max(norms) > 1e9
    assert summary(wild)["train/nonfinite_steps"] > 0
    assert "is not finite (NaN or Inf); the step was skipped" in result.err
    assert_all_finite(wild)

    result = rnnzoo(
        "train", ADDING, *EXPLODING, "controllers.clip_norm.max_norm=1.0", "--run-dir", tame
    )
    assert result.code == 0, result.output
    logged = [r for r in rows(tame / "metrics.jsonl") if "train/loss" in r]
    assert len(logged) == 40
    assert all(math.isfinite(r["train/loss"]) for r in logged)
    assert max(r["grad/norm_preclip"] for r in logged) > 100  # still visible in the logs
    assert sum(r["controller/clip_norm/clipped"] for r in logged) > 20
    assert summary(tame)["train/nonfinite_steps"] == 0
    assert math.isfinite(summary(tame)["val/mse"])
    assert_all_finite(tame)


def test_a_diverged_run_exits_3_and_resumes_from_before_the_trouble(
    tmp_path: Path, trouble: Path
) -> None:
    """Steps 5, 6 and 7 are not finite: the run stops at 7 with exit code 3 and
    status "diverged". The checkpoint of step 6 (finite weights, but written in the
    middle of the trouble) is set aside; that of step 4 is kept although
    keep_checkpoints=1, and the run resumes from it."""
    run = tmp_path / "run"
    args = [*SMALL, "task.name=corrupt_adding", "model.activation=naive_tanh"]
    args += ["trainer.steps=10", "trainer.checkpoint_every=2", "trainer.keep_checkpoints=1"]
    result = rnnzoo(
        "-p", trouble, "train", ADDING, *args, "task.spikes=[4,5,6]", "trainer.max_nonfinite=3",
        "--run-dir", run,
    )  # fmt: skip
    assert result.code == 3, result.output
    assert "Traceback" not in result.output
    assert "non-finite losses or gradients from step 5 on" in result.err
    assert f"rnnzoo train --resume {run} optim.lr=...` goes on from step 4" in result.err
    assert summary(run)["status"] == "diverged" and summary(run)["step"] == 7
    assert steps_of(run) == [4]
    assert (run / "checkpoints" / "ckpt-00000006.pt.diverged").is_file()

    resumed = rnnzoo("-p", trouble, "train", "--resume", run, "task.spikes=[]")
    assert resumed.code == 0, resumed.output
    assert summary(run)["status"] == "finished" and summary(run)["step"] == 10
    assert_all_finite(run)


def test_a_run_that_diverges_at_once_is_started_again_by_resume(tmp_path: Path) -> None:
    """The issue's reproduction: SGD at lr 1e20 overflows within a few steps, before
    any checkpoint. Exit code 3; resuming with a sane rate starts over and finishes."""
    run = tmp_path / "nf"
    args = [
        "task.length=20", "task.val_size=32", "model.cell=elman", "model.hidden_size=16",
        "optim.name=sgd", "optim.lr=1e20", "trainer.steps=60", "trainer.batch_size=8",
        "trainer.checkpoint_every=20", "trainer.progress=false", "gradflow.every=0",
        "controllers.clip_norm=null", "tracking.wandb_mode=disabled",
    ]  # fmt: skip
    result = rnnzoo("train", ADDING, *args, "--run-dir", run)
    assert result.code == 3, result.output
    assert "No checkpoint was written before that" in result.err
    assert summary(run)["status"] == "diverged"
    assert steps_of(run) == []

    resumed = rnnzoo("train", "--resume", run, "optim.lr=0.001")
    assert resumed.code == 0, resumed.output
    assert "has no checkpoint yet; the run starts again at step 0" in resumed.err
    assert summary(run)["status"] == "finished" and summary(run)["step"] == 60
    assert summary(run)["train/nonfinite_steps"] == 0
    assert_all_finite(run)
