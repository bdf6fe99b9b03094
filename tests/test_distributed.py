"""Data-parallel training under torchrun, with real processes (gloo on the CPU):
the ranks stay identical, equal one process with the same global batch, only rank 0
writes, a lost rank stops the others, and the run resumes on any number of ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_run import write

from rnnzoo import checkpoint

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"
SMALL = [
    "task.length=12",
    "task.val_size=48",
    "model.hidden_size=8",
    "trainer.steps=20",
    "trainer.batch_size=16",
    "trainer.log_every=5",
    "trainer.eval_every=10",
    "trainer.checkpoint_every=5",
    "trainer.progress=false",
    "gradflow.every=10",
    "gradflow.batch_size=8",
    "tracking.wandb_mode=disabled",
]
DUMP = """
import os
import signal

import torch

from rnnzoo import hookimpl


@hookimpl
def rnnzoo_step_end(run, step):
    if os.environ.get("KILL_RANK_1_AT") == str(step) and run.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # a process lost mid-run


@hookimpl
def rnnzoo_train_end(run):
    torch.save(run.model.state_dict(), os.path.join(os.environ["DUMP"], f"rank{run.rank}.pt"))
"""


def launch(procs: int, *args: object, cwd: Path, env: dict[str, str] | None = None):
    """``rnnzoo ARGS`` in ``procs`` processes under torchrun (1: a plain process)."""
    head = [sys.executable, "-m", "rnnzoo"]
    if procs > 1:
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={procs}", "-m", "rnnzoo"]  # fmt: skip
    return subprocess.run(
        [*head, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_close_weights(a: dict, b: dict, tol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=tol, rtol=tol, msg=name)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").open()]


@pytest.fixture()
def dump(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    out = tmp_path / "dump"
    out.mkdir()
    return write(tmp_path / "dump.py", DUMP), {"DUMP": str(out)}


def train_both(tmp_path: Path, dump, *args: str, experiment: Path = ADDING):
    """The same experiment in 2 ranks and in 1 process; both rank dumps and runs."""
    plugin, env = dump
    two = launch(2, "-p", plugin, "train", experiment, *args, "--run-dir", "two",
                 cwd=tmp_path, env=env)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    ranks = [weights(tmp_path / "dump" / f"rank{r}.pt") for r in (0, 1)]
    one = launch(1, "-p", plugin, "train", experiment, *args, "--run-dir", "one",
                 cwd=tmp_path, env=env)  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    return two, ranks, weights(tmp_path / "dump" / "rank0.pt")


def test_two_ranks_equal_one_process_and_only_rank_0_writes(tmp_path: Path, dump) -> None:
    overrides = [*SMALL, "tracking.wandb_mode=offline", "controllers.clip_norm.max_norm=0.05"]
    two, (rank0, rank1), single = train_both(tmp_path, dump, *overrides)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), f"ranks differ in {name}"
    assert_close_weights(rank0, single)
    # one writer: one metrics file whose rows equal the single process's, one W&B run
    run, alone = tmp_path / "two", tmp_path / "one"
    assert two.stdout.count("run folder:") == 1
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert [r["step"] for r in rows(run)] == [r["step"] for r in rows(alone)]
    logged = {r["step"]: r for r in rows(run) if "controller/clip_norm/norm_preclip" in r}
    expected = {r["step"]: r for r in rows(alone) if "controller/clip_norm/norm_preclip" in r}
    assert logged.keys() == expected.keys() and logged
    for step, row in logged.items():
        for key in ("controller/clip_norm/norm_preclip", "train/loss", "clip/rate"):
            assert row[key] == pytest.approx(expected[step][key], rel=1e-5), (step, key)
    for key in ("val/mse", "best/val/mse"):
        got = json.loads((run / "summary.json").read_text())[key]
        want = json.loads((alone / "summary.json").read_text())[key]
        assert got == pytest.approx(want, rel=1e-4), key
    probes = [json.loads(line) for line in (run / "gradflow.jsonl").open()]
    alone_probes = [json.loads(line) for line in (alone / "gradflow.jsonl").open()]
    assert [p["step"] for p in probes] == [p["step"] for p in alone_probes] == [10, 20]
    for got, want in zip(probes, alone_probes, strict=True):
        assert got["grad_h"]["layer0/dir0"] == pytest.approx(
            want["grad_h"]["layer0/dir0"], rel=1e-3
        )
    assert len(list((run / "checkpoints").glob("ckpt-*.pt"))) == 2  # keep_checkpoints


LM = """
task: {name: char_lm, train: TEXT, bptt: 12}
model: {head: lm, hidden_size: 8}
controllers: {tbptt: {k1: 4, k2: 6}, clip_state: {max_value: 0.02, mode: norm}}
trainer: {steps: 10, batch_size: 4, log_every: 5, eval_every: 5, checkpoint_every: 5,
          progress: false}
gradflow: {every: 0}
tracking: {wandb_mode: disabled}
"""


def test_truncated_bptt_on_a_stream_task_matches_one_process(tmp_path: Path, dump) -> None:
    """TBPTT windows (no_sync for all but the last backward) and per-step clipping of
    dL/dh_t (each rank its own rows) under DDP: the weights of one process."""
    text = write(tmp_path / "text.txt", "the quick brown fox jumps over the lazy dog\n" * 30)
    experiment = write(tmp_path / "lm.yaml", LM.replace("TEXT", str(text)))
    _, (rank0, rank1), single = train_both(tmp_path, dump, experiment=experiment)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert_close_weights(rank0, single)
    # the carried state of all 4 lanes, gathered from both ranks, is in the checkpoint
    carried = checkpoint.load(checkpoint.list_checkpoints(tmp_path / "two")[-1])["carried"]
    alone = checkpoint.load(checkpoint.list_checkpoints(tmp_path / "one")[-1])["carried"]
    assert carried[0][0].shape[0] == 4
    torch.testing.assert_close(carried[0][0], alone[0][0], atol=1e-5, rtol=1e-5)


def test_a_lost_rank_stops_the_other_and_the_run_resumes_on_one(tmp_path: Path, dump) -> None:
    plugin, env = dump
    started = time.monotonic()
    killed = launch(2, "-p", plugin, "train", ADDING, *SMALL, "--run-dir", "run",
                    cwd=tmp_path, env={**env, "KILL_RANK_1_AT": "12"})  # fmt: skip
    assert killed.returncode != 0
    assert time.monotonic() - started < 300
    run = tmp_path / "run"
    assert checkpoint.step_of(checkpoint.list_checkpoints(run)[-1]) == 10
    resumed = launch(1, "train", "--resume", run, cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["step"] == 20
    straight = launch(1, "-p", plugin, "train", ADDING, *SMALL, "--run-dir", "straight",
                      cwd=tmp_path, env=env)  # fmt: skip
    assert straight.returncode == 0, straight.stderr[-3000:]
    final = checkpoint.load(checkpoint.list_checkpoints(run)[-1])["model"]
    assert_close_weights(final, weights(tmp_path / "dump" / "rank0.pt"))


def test_a_global_batch_that_does_not_divide_is_an_error(tmp_path: Path) -> None:
    """Through the rnnzoo script (``torchrun --no-python rnnzoo``) this time."""
    script = Path(sys.executable).parent / "rnnzoo"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "--no-python", script, "train", ADDING, *SMALL, "trainer.batch_size=15"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode != 0
    # each rank says it in one paragraph (torchrun then reports the failed processes)
    assert "Error: trainer.batch_size=15 is the global batch, shared by 2 processes" in (
        result.stderr
    )
