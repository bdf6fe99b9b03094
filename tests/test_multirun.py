"""``rnnzoo train -m``: the grid of a multirun, and the pool that trains it.

The grid expansion is tested on its own; the pool with real processes: a run
that fails is reported with the end of its log while the others finish, and
Ctrl-C stops every run with a checkpoint that ``rnnzoo train --resume`` continues.
(The grid that `rnnzoo compare` reads is trained in test_compare.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_run import rnnzoo

from rnnzoo.commands.multirun import launch
from rnnzoo.errors import UsageError
from rnnzoo.multirun import expand, split_values

ROOT = Path(__file__).resolve().parents[1]
ADDING = ROOT / "experiments" / "adding.yaml"
RNNZOO = Path(sys.executable).with_name("rnnzoo")
TINY = [
    "task.length=8",
    "task.val_size=32",
    "model.hidden_size=4",
    "trainer.batch_size=8",
    "trainer.log_every=3",
    "trainer.progress=false",
    "tracking.wandb_mode=disabled",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


# -- the grid ----------------------------------------------------------------------


def test_the_grid_is_the_product_of_the_swept_values_in_order() -> None:
    jobs = expand(["model.cell=lstm,gru", "trainer.seed=0,1,2", "trainer.steps=5"])
    assert [j.swept for j in jobs] == [
        (f"model.cell={cell}", f"trainer.seed={seed}")
        for cell in ("lstm", "gru")
        for seed in range(3)
    ]
    assert all(j.overrides[2] == "trainer.steps=5" for j in jobs)
    assert [j.n for j in jobs] == list(range(6))
    assert jobs[4].label == "model.cell=gru trainer.seed=1"
    assert jobs[4].folder_name == "4-cell=gru,seed=1"


def test_commas_inside_brackets_and_quotes_do_not_split() -> None:
    assert split_values("task.spikes=[1,2]") == ["[1,2]"]
    assert split_values("task.spikes=[1,2],[3,[4,5]]") == ["[1,2]", "[3,[4,5]]"]
    assert split_values("model.cell_args={a: 1, b: 2},{a: 3}") == ["{a: 1, b: 2}", "{a: 3}"]
    assert split_values("tracking.name='a,b',c") == ["'a,b'", "c"]
    assert split_values('tracking.name="a,b"') == ['"a,b"']
    assert split_values("tracking.name=it's") == ["it's"]  # an apostrophe is no quote
    jobs = expand(["task.spikes=[1,2]", "model.cell=lstm,gru"])
    assert [j.overrides for j in jobs] == [  # list literals come out as JSON, one list
        ("task.spikes=[1, 2]", "model.cell=lstm"),
        ("task.spikes=[1, 2]", "model.cell=gru"),
    ]
    assert jobs[0].folder_name == "0-cell=lstm"


def test_single_values_and_empty_values_are_fixed() -> None:
    jobs = expand(["model.cell=gru", "tracking.name=", "--trainer.steps", "7"])
    assert len(jobs) == 1
    assert jobs[0].overrides == ("model.cell=gru", "tracking.name=", "trainer.steps=7")
    assert jobs[0].swept == () and jobs[0].label == "the experiment as given"
    assert jobs[0].folder_name == "0-run"
    assert [j.overrides for j in expand([])] == [()]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.cell=lstm,gru", "model.cell=elman"], "'model.cell' is given twice"),
        (["model.cell=lstm,gru,lstm"], "lists 'lstm' more than once"),
        (["trainer.seed=0,,1"], "has an empty value in its list"),
        (["trainer.seed=0,1,"], "has an empty value in its list"),
        (["task.spikes=[1,2"], "an unclosed bracket"),
        (["task.spikes=1,2]"], "a ']' that closes nothing"),
        (["tracking.name='a,b"], "an unclosed '"),
        (["=lstm,gru"], "is not of the form key=value"),
        (["model.cell"], "is not of the form key=value"),
    ],
)
def test_an_ambiguous_grid_is_a_usage_error(overrides: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        expand(overrides)


def test_a_grid_that_cannot_start_starts_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = rnnzoo("train", ADDING, "-m", "model.cell=lstm,lstn", *TINY)
    assert result.code == 2
    assert "Run 1 of the grid (model.cell=lstn) cannot start, so none was started" in result.err
    assert "Did you mean 'lstm'?" in result.err and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()
    result = rnnzoo("train", ADDING, "-m", "model.cell=lstm,gru", "--jobs", "0")
    assert result.code == 2 and "--jobs" in result.err
    result = rnnzoo("train", "-m", "model.cell=lstm,gru")
    assert result.code == 2 and "Name an experiment file" in result.err
    result = rnnzoo("train", "--resume", tmp_path, "-m", "model.cell=lstm,gru")
    assert result.code == 2 and "--resume continues one run, not a grid" in result.err


def test_each_run_is_a_train_process_in_the_group_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    overrides = ("model.cell=lstm,gru", "trainer.steps=5")
    job = expand(overrides)[1]
    run = launch("exp.yaml", job, tmp_path / "g", overrides, ["my.py"], jobs=2)
    assert run.argv[1:] == [
        "-m", "rnnzoo", "train", "exp.yaml", "model.cell=gru", "trainer.steps=5",
        "tracking.group=g", "trainer.progress=false", "--run-dir", str(tmp_path / "g" / "1-cell=gru"),
        "-p", "my.py",
    ]  # fmt: skip
    assert run.env["OMP_NUM_THREADS"] == "4" and run.log == tmp_path / "g" / "1-cell=gru.log"
    given = ("model.cell=lstm,gru", "tracking.group=mine", "--trainer.progress", "true")
    run = launch("exp.yaml", expand(given)[0], tmp_path / "g", given, [], jobs=3)
    assert "tracking.group=mine" in run.argv and "tracking.group=g" not in run.argv
    assert "trainer.progress=true" in run.argv and "trainer.progress=false" not in run.argv
    assert run.env["OMP_NUM_THREADS"] == "2"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert launch("exp.yaml", job, tmp_path, overrides, [], jobs=2).env["OMP_NUM_THREADS"] == "3"


# -- real processes ----------------------------------------------------------------


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path: Path) -> None:
    group = tmp_path / "grid"
    result = subprocess.run(
        [str(RNNZOO), "train", str(ADDING), "-m", "model.hidden_size=4,0", *TINY[:2], *TINY[3:]]
        + ["trainer.steps=3", "gradflow.every=3", "--jobs", "2", "--run-dir", str(group)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(
        re.fullmatch(r"\[[12]/2\] model\.hidden_size=0: failed, exit 2 \(\d+ s\)", line)
        for line in lines
    ), result.stdout
    assert "    Error: 'model.hidden_size' must be at least 1, got 0." in lines
    assert any(re.match(r"\[[12]/2\] model\.hidden_size=4: finished, val/mse ", x) for x in lines)
    assert "1 of 2 runs did not finish: model.hidden_size=0 (failed, exit 2)" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    runs = json.loads((group / "multirun.json").read_text())["runs"]
    assert [(r["status"], r["exit_code"]) for r in runs] == [("finished", 0), ("failed", 2)]
    assert (group / "0-hidden_size=4" / "summary.json").is_file()
    assert "finished" in (group / "0-hidden_size=4" / "train.log").read_text()
    # the failed run never made its folder: its log stays beside it
    assert not (group / "1-hidden_size=0").exists()
    assert "must be at least 1" in (group / "1-hidden_size=0.log").read_text()


def wait_for_training(folders: list[Path], timeout: float = 120.0) -> None:
    """Until every folder's metrics.jsonl has a row: each run is in its loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(
            (f / "metrics.jsonl").is_file() and (f / "metrics.jsonl").read_text().strip()
            for f in folders
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"the runs did not start training within {timeout} s")


def test_ctrl_c_stops_every_run_with_a_checkpoint_and_they_resume(tmp_path: Path) -> None:
    group = tmp_path / "grid"
    parent = subprocess.Popen(
        [str(RNNZOO), "train", str(ADDING), "-m", "model.cell=lstm,gru,elman", *TINY]
        + ["trainer.steps=100000", "--jobs", "2", "--run-dir", str(group)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=tmp_path,
    )
    folders = [group / "0-cell=lstm", group / "1-cell=gru"]
    try:
        wait_for_training(folders)
        parent.send_signal(signal.SIGINT)
        out, err = parent.communicate(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 130, out + err
    runs = json.loads((group / "multirun.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["interrupted", "interrupted", "not started"]
    for folder in folders:
        assert list((folder / "checkpoints").glob("ckpt-*.pt")), folder
        assert f"rnnzoo train --resume {folder}" in err
        assert "stopping after this step" in (folder / "train.log").read_text()
    assert "--run-dir " + str(group / "2-cell=elman") in err  # never started: its command
    assert not (group / "2-cell=elman").exists()

    ckpt = max((folders[1] / "checkpoints").glob("ckpt-*.pt"))
    done = int(ckpt.stem.split("-")[1])
    resumed = subprocess.run(
        [str(RNNZOO), "train", "--resume", str(folders[1]), f"trainer.steps={done + 3}"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads((folders[1] / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["step"] == done + 3
