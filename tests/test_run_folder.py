"""A run folder has one owner and honest endings: unique default folders, one
writer at a time (a lock), no mixing with another run's files, finished runs left
alone, everything checkable checked before step 0, files replaced atomically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_run import rnnzoo, write

from rnnzoo import checkpoint, config
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"
S = [
    "task.length=20",
    "task.val_size=64",
    "model.hidden_size=16",
    "trainer.steps=40",
    "trainer.batch_size=16",
    "trainer.checkpoint_every=20",
    "trainer.eval_every=20",
    "trainer.log_every=10",
    "trainer.progress=false",
    "gradflow.every=0",
    "tracking.wandb_mode=disabled",
]
HOLD = """
import os
import time
from pathlib import Path

from rnnzoo import hookimpl


@hookimpl
def rnnzoo_step_end(run, step):
    if step == 2:  # tell the test, then wait until it has tried a second writer
        Path(os.environ["HOLD_DIR"], "holding").write_text(str(os.getpid()))
        deadline = time.time() + 60
        while not Path(os.environ["HOLD_DIR"], "release").exists() and time.time() < deadline:
            time.sleep(0.05)
"""


LM = """
task:
  name: char_lm
  train: TEXT
  bptt: 8
model:
  head: lm
  hidden_size: 16
trainer:
  steps: 40
  batch_size: 4
  checkpoint_every: 20
  eval_every: 20
  progress: false
gradflow:
  every: 0
tracking:
  wandb_mode: disabled
"""


def lm_experiment(folder: Path) -> Path:
    """A small character language model (a stream task) on a text of its own."""
    text = write(folder / "train.txt", "to be or not to be, that is the question\n" * 40)
    return write(folder / "lm.yaml", LM.replace("TEXT", str(text)))


def cli(*args: object, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnzoo", *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", **(env or {})},
    )


def train_rows(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    return [r["step"] for r in rows if "train/loss" in r]


def files_of(run: Path) -> dict[str, int]:
    """Every file's modification time, but the lock (it names its last holder)."""
    return {
        str(p): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != ".lock"
    }


def test_runs_started_together_each_get_a_whole_folder(tmp_path: Path) -> None:
    """Three trainings started in the same second: three folders, each complete,
    none with another's rows. Two more asking for one folder: exactly one trains."""
    procs = [cli("train", ADDING, *S, f"trainer.seed={s}", cwd=tmp_path) for s in (1, 2, 3)]
    shared = [cli("train", ADDING, *S, "--run-dir", "one", cwd=tmp_path) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs + shared]
    assert [code for code, _ in results[:3]] == [0, 0, 0], results
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 3
    for run in folders:
        assert train_rows(run) == [10, 20, 30, 40]
        assert checkpoint.step_of(checkpoint.list_checkpoints(run)[-1]) == 40
    seeds = {config.load(run / "config.yaml").trainer.seed for run in folders}
    assert seeds == {1, 2, 3}
    codes = sorted(code for code, _ in results[3:])
    assert codes == [0, 2], results[3:]
    loser = next(err for code, err in results[3:] if code == 2)
    assert "Traceback" not in loser
    assert "is in use by another rnnzoo process" in loser or "already holds a run" in loser, loser
    assert train_rows(tmp_path / "one") == [10, 20, 30, 40]


def test_a_second_writer_is_refused_while_a_run_trains(tmp_path: Path) -> None:
    plugin = write(tmp_path / "hold.py", HOLD)
    env = {"HOLD_DIR": str(tmp_path)}
    first = cli("-p", plugin, "train", ADDING, *S, "--run-dir", "r", cwd=tmp_path, env=env)
    deadline = time.time() + 120
    while not (tmp_path / "holding").exists():
        assert first.poll() is None and time.time() < deadline, first.stderr.read()
        time.sleep(0.05)
    pid = (tmp_path / "holding").read_text()
    cases = [
        (["--resume", "r"], f"is in use by another rnnzoo process (pid {pid})"),
        ([ADDING, *S, "--run-dir", "r"], f"is in use by another rnnzoo process (pid {pid})"),
    ]
    for args, says in cases:
        second = cli("train", *args, cwd=tmp_path)
        assert second.wait(timeout=120) == 2
        err = second.stderr.read()
        assert says in err and "Traceback" not in err, err
    evaluated = cli("eval", "r", cwd=tmp_path)  # readers take no lock
    assert evaluated.wait(timeout=120) == 2  # no checkpoint yet, said so plainly
    assert "No checkpoint in" in evaluated.stderr.read()
    (tmp_path / "release").write_text("")
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert train_rows(tmp_path / "r") == [10, 20, 30, 40]


def test_a_folder_with_files_of_another_run_is_refused(tmp_path: Path) -> None:
    """`rm R/*` leaves the old run's checkpoints folder: a new run is refused
    instead of losing its checkpoints to the old run's rotation."""
    run = tmp_path / "R"
    assert rnnzoo("train", ADDING, *S, "--run-dir", run).code == 0
    for path in run.iterdir():
        if path.is_file():
            path.unlink()
    before = files_of(run)
    result = rnnzoo("train", ADDING, *S, "trainer.seed=5", "--run-dir", run)
    assert result.code == 2, result.output
    assert "already holds files (checkpoints" in result.err
    assert files_of(run) == before


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        assert rnnzoo("train", ADDING, *S, "trainer.steps=20", "--run-dir", run).code == 0
    foreign = checkpoint.list_checkpoints(a)[-1]
    (b / "checkpoints" / "ckpt-00000030.pt").write_bytes(foreign.read_bytes())
    result = rnnzoo("train", "--resume", b, "trainer.steps=40")
    assert result.code == 2, result.output
    assert "belongs to run" in result.err and "copied in from elsewhere" in result.err


@pytest.mark.parametrize(
    ("extra", "more", "says"),
    [
        ([], ["trainer.steps=60"], "already finished at step 40 (trainer.steps=40)"),
        (
            ["trainer.eval_every=5", "trainer.early_stop_patience=1", "optim.lr=1e-9"],
            ["trainer.early_stop_patience=0"],
            "stopped early at step",
        ),
    ],
    ids=["steps-reached", "stopped-early"],
)
def test_resuming_a_finished_run_changes_nothing(
    tmp_path: Path, extra: list[str], more: list[str], says: str
) -> None:
    run = tmp_path / "run"
    first = rnnzoo("train", ADDING, *S, *extra, "--run-dir", run)
    assert first.code == 0, first.output
    done = json.loads((run / "summary.json").read_text())
    before = files_of(run)
    again = rnnzoo("train", "--resume", run)
    assert again.code == 0, again.output
    assert says in again.err and "Nothing was changed" in again.err
    assert files_of(run) == before
    onward = rnnzoo("train", "--resume", run, *more)
    assert onward.code == 0, onward.output
    later = json.loads((run / "summary.json").read_text())
    assert later["step"] > done["step"] and later["status"] == "finished"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["trainer.early_stop_metric=val/accuracy"], "Early-stopping metric 'val/accuracy'"),
        (["task.dev=EMPTY"], "is empty"),
    ],
    ids=["unknown-metric", "empty-dev-file"],
)
def test_what_would_fail_at_the_first_evaluation_fails_before_step_0(
    tmp_path: Path, args: list[str], says: str
) -> None:
    empty = write(tmp_path / "dev.txt", "\n")
    args = [a.replace("EMPTY", str(empty)) for a in args]
    experiment = lm_experiment(tmp_path) if "task.dev" in args[0] else ADDING
    run = tmp_path / "run"
    result = rnnzoo("train", experiment, *args, "trainer.eval_every=30", "--run-dir", run)
    assert result.code == 2, result.output
    assert says in result.err and "Traceback" not in result.output
    assert not run.exists()  # nothing was written


FLAKY = """
import os
from pathlib import Path

from rnnzoo import hookimpl
from rnnzoo_plugins.tasks.synthetic import AddingTask


class FlakyAdding(AddingTask):
    \"\"\"The adding problem, whose metrics fail at the third evaluation while the
    file FLAKY names exists (the first is the check before step 0).\"\"\"

    calls = 0

    def metrics(self, predictions, batch):
        FlakyAdding.calls += 1
        if FlakyAdding.calls == 3 and Path(os.environ["FLAKY"]).exists():
            raise OSError("the metrics service went away")
        return super().metrics(predictions, batch)


@hookimpl
def rnnzoo_tasks():
    return {"flaky_adding": FlakyAdding}
"""


def test_a_failed_evaluation_keeps_the_trained_step(tmp_path: Path) -> None:
    """The evaluation at step 40 fails: the step is checkpointed first, and the
    resumed run evaluates it and ends where an untroubled run ends."""
    plugin = write(tmp_path / "flaky.py", FLAKY)
    marker = write(tmp_path / "marker", "")
    args = [*S, "task.name=flaky_adding", "trainer.steps=60", "trainer.checkpoint_every=30"]
    args.append("trainer.eval_batches=1")  # one metrics call per evaluation
    os.environ["FLAKY"] = str(marker)
    try:
        straight = cli("-p", plugin, "train", ADDING, *args, "--run-dir", "straight",
                       cwd=tmp_path, env={"FLAKY": str(tmp_path / "absent")})  # fmt: skip
        assert straight.wait(timeout=300) == 0, straight.stderr.read()
        failed = cli("-p", plugin, "train", ADDING, *args, "--run-dir", "r", cwd=tmp_path)
        assert failed.wait(timeout=300) == 1
        assert "the metrics service went away" in failed.stderr.read()
        assert checkpoint.step_of(checkpoint.list_checkpoints(tmp_path / "r")[-1]) == 40
        marker.unlink()
        resumed = cli("train", "--resume", "r", cwd=tmp_path)
        assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    finally:
        del os.environ["FLAKY"]

    def final(run: str) -> dict:
        return checkpoint.load(checkpoint.list_checkpoints(tmp_path / run)[-1])

    for name, value in final("straight")["model"].items():
        assert torch.equal(value, final("r")["model"][name]), name
    rows = {
        run: [
            {k: v for k, v in json.loads(x).items() if not k.startswith("perf/")}
            for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        ]
        for run in ("straight", "r")
    }
    assert rows["r"] == rows["straight"]


def test_a_stream_run_refuses_a_new_batch_size_and_keeps_its_config(tmp_path: Path) -> None:
    run = tmp_path / "lm"
    assert rnnzoo("train", lm_experiment(tmp_path), "--run-dir", run).code == 0
    saved = (run / "config.yaml").read_text()
    result = rnnzoo("train", "--resume", run, "trainer.batch_size=8", "trainer.steps=60")
    assert result.code == 2, result.output
    assert "trainer.batch_size cannot change to 8 on resume" in result.err
    assert (run / "config.yaml").read_text() == saved
    again = rnnzoo("train", "--resume", run, "trainer.steps=60")
    assert again.code == 0, again.output


def test_run_files_are_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills up while config.yaml and vocab.json are rewritten on resume
    leaves both whole (the previous versions), and the run resumable."""
    run = tmp_path / "lm"
    assert rnnzoo("train", lm_experiment(tmp_path), "--run-dir", run).code == 0
    saved = {name: (run / name).read_bytes() for name in ("config.yaml", "vocab.json")}

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    result = rnnzoo("train", "--resume", run, "trainer.steps=60")
    assert result.code != 0 and "No space left on device" in result.err
    for name, content in saved.items():
        assert (run / name).read_bytes() == content, name
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    assert rnnzoo("train", "--resume", run, "trainer.steps=60").code == 0


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda s: s.pop("rng"), "'rng' does not hold the random-number state"),
        (lambda s: s.update(rng={"torch": torch.zeros(3)}), "no random-number state"),
        (lambda s: s.pop("step"), "not an rnnzoo checkpoint (no model state or step)"),
        (lambda s: s.update(step="7"), "'step' is '7'"),
        (lambda s: s.update(best="low"), "'best' is 'low'"),
    ],
    ids=["no-rng", "rng-of-floats", "no-step", "step-a-string", "best-a-string"],
)
def test_crafted_checkpoints_get_a_message(tmp_path: Path, damage, says: str) -> None:
    run = tmp_path / "run"
    assert rnnzoo("train", ADDING, *S, "trainer.steps=20", "--run-dir", run).code == 0
    path = checkpoint.list_checkpoints(run)[-1]
    state = torch.load(path, weights_only=True)
    damage(state)
    torch.save(state, path)
    result = rnnzoo("train", "--resume", run, "trainer.steps=40")
    assert result.code == 2, result.output
    assert "Traceback" not in result.output
    assert f"Checkpoint '{path}'" in result.err and says in result.err


def test_trainer_in_process_releases_the_folder(tmp_path: Path) -> None:
    """A Trainer that fails to build, or has finished, lets the next one in."""
    registry = Registry(plugin_manager())
    run = tmp_path / "run"
    Trainer(config.load(ADDING, S), registry, run).fit()
    with pytest.raises(Exception, match="already holds a run"):
        Trainer(config.load(ADDING, S), registry, run)
    more = config.load(run / "config.yaml", ["trainer.steps=60"])
    assert Trainer(more, registry, run, resume=True).fit()["step"] == 60
