"""W&B in a process of its own: calls reach W&B in order, a failure stops the
rest without a hang, and a training process killed mid-run keeps in W&B what it
had logged. Read back from the offline run's own files (W&B is not mocked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
from wandb_records import read_run, run_files, tables

from rnnzoo.errors import UsageError
from rnnzoo.tracking import Tracker
from rnnzoo.training.lock import LOCK_NAME, RunLock, fcntl


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def tracker(run_dir: Path, lock: int | None = None) -> Tracker:
    run_dir.mkdir(exist_ok=True)
    return Tracker(
        run_dir, run_id="proc", config={"model.cell": "gru"}, project="rnnzoo-tests",
        name="proc", group=None, tags=[], wandb_mode="offline", lock=lock,
    )  # fmt: skip


def steps(run_dir: Path) -> list[int]:
    (log,) = run_files(run_dir)
    return [h["trainer/step"] for h in read_run(log).history if "train/loss" in h]


def test_calls_reach_wandb_in_order(tmp_path):
    t = tracker(tmp_path)
    for step in range(1, 41):
        t.log(step, {"train/loss": 1.0 / step})
        if step % 10 == 0:
            t.log_table(step, "table", ["step", "x"], [[step, 0], [step, 1]])
    t.summary({"step": 40})
    t.close()
    assert steps(tmp_path) == list(range(1, 41))
    (log,) = run_files(tmp_path)
    assert sorted(tables(log, "table")) == [10, 20, 30, 40]
    assert read_run(log).summary["step"] == 40


def test_a_failed_call_stops_the_rest_with_one_warning_and_no_hang(tmp_path):
    t = tracker(tmp_path)
    t.log(1, {"train/loss": 1.0})
    t.log_checkpoint(tmp_path / "missing.pt", ["latest"])  # W&B cannot add the file
    with pytest.warns(UserWarning, match="W&B is unavailable") as caught:
        t.flush()  # returns: the W&B process has answered with its failure
        for step in range(2, 5):
            t.log(step, {"train/loss": 1.0 / step})
        t.flush()
        t.close()
    assert len(caught) == 1
    assert "missing.pt" in str(caught[0].message)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # the JSONL file stays complete


def test_a_wandb_process_that_cannot_start_costs_one_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.warns(UserWarning, match="W&B is unavailable") as caught:
        t = tracker(tmp_path)
        t.log(1, {"train/loss": 1.0})
        t.close()
    assert len(caught) == 1 and "did not start" in str(caught[0].message)
    assert (tmp_path / "metrics.jsonl").read_text().count("train/loss") == 1


class Noisy:
    """A value that writes to stderr while it is being pickled."""

    def __reduce__(self):
        print("pickling a noisy value", file=sys.stderr, flush=True)
        return float, (2.5,)


def test_output_written_while_a_call_is_sent_neither_hangs_nor_is_lost(tmp_path):
    """A send takes no lock, so output written in the middle of one (here while a
    value is pickled; a signal handler is the other case) is passed on too."""
    t = tracker(tmp_path)
    t.log(1, {"train/loss": 1.0, "noisy": Noisy()})
    t.close()
    (log,) = run_files(tmp_path)
    run = read_run(log)
    assert [h["noisy"] for h in run.history if "noisy" in h] == [2.5]
    assert "pickling a noisy value" in run.output


def test_tensors_arrive_as_numbers_and_histograms(tmp_path):
    t = tracker(tmp_path)
    t.log(1, {"train/loss": torch.tensor(0.5), "weights": torch.arange(6.0)})
    t.close()
    (log,) = run_files(tmp_path)
    (row,) = [h for h in read_run(log).history if "train/loss" in h]
    assert row["train/loss"] == 0.5
    assert row["weights/_type"] == "histogram"
    assert sum(row["weights/values"]) == 6  # every element counted once


def test_a_value_that_cannot_be_sent_costs_one_warning_and_keeps_the_rest(tmp_path):
    t = tracker(tmp_path)
    t.log(1, {"train/loss": 1.0})
    with pytest.warns(UserWarning, match="W&B is unavailable") as caught:
        t.log(2, {"lock": threading.Lock()})
        t.log(3, {"train/loss": 0.5})
        t.close()
    assert len(caught) == 1 and "cannot be sent" in str(caught[0].message)
    assert steps(tmp_path) == [1]  # W&B finished the run with what it had
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


@pytest.mark.skipif(fcntl is None, reason="run folders are locked with flock")
def test_the_run_folder_stays_locked_until_wandb_has_written_the_run(tmp_path):
    """The W&B process holds the run folder's lock too: a second writer is refused
    until W&B is done, even once training has let go of it."""
    lock = RunLock(tmp_path)
    lock.acquire()
    t = tracker(tmp_path, lock.fileno)
    t.log(1, {"train/loss": 1.0})
    t.flush()
    lock.release()  # training lets go; the W&B process still holds it
    with pytest.raises(UsageError, match="in use by another rnnzoo process"):
        RunLock(tmp_path).acquire()
    t.close()
    second = RunLock(tmp_path)
    second.acquire()  # W&B is done: free
    second.release()


KILLED = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from rnnzoo.training.lock import RunLock
from test_wandb_process import tracker, wandb_processes

lock = RunLock(Path({run!r}))
lock.acquire()
t = tracker(Path({run!r}), lock.fileno)
for step in range(1, 6):
    t.log(step, {{"train/loss": 1.0 / step}})
t.log_table(5, "table", ["step", "x"], [[5, 0]])
t.flush()  # W&B has every call; then the training process dies without closing
print(*wandb_processes(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie nobody reaps has too)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_killed_training_process_keeps_what_it_logged(tmp_path):
    """The W&B process sees the training process go, finishes the run with every
    call it had, and holds the run folder's lock until then, naming itself."""
    script = KILLED.format(tests=str(Path(__file__).parent), run=str(tmp_path))
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == -9, proc.stderr
    (worker,) = map(int, proc.stdout.split())  # exactly one W&B process
    deadline = time.monotonic() + 120
    while not gone(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gone(worker), "the W&B process did not finish"
    assert steps(tmp_path) == [1, 2, 3, 4, 5]
    (log,) = run_files(tmp_path)
    assert sorted(tables(log, "table")) == [5]
    assert "exit" in read_run(log).record_types  # finished, not cut off
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(worker)


def wandb_processes() -> list[int]:
    """The W&B processes this process has started and that are still there."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == os.getpid() and b"rnnzoo.wandb_worker" in cmdline:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_a_wandb_process_lives_exactly_as_long_as_an_enabled_tracker(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("WANDB_MODE", mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = tracker(tmp_path)
        t.log(1, {"train/loss": 1.0})
        alive = wandb_processes()
        t.close()
    assert len(alive) == (mode == "offline")
    assert not set(alive) & set(wandb_processes())  # ended and reaped by close
    assert (tmp_path / "wandb").exists() == (mode == "offline")
