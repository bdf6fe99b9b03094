"""OpenMP's wait policy, chosen by the command line at launch (rnnzoo.waitpolicy):
the decision on made-up measurements, the measurement of a machine made busy by
processes this test starts, and real ``rnnzoo`` processes as OpenMP sees them
(``OMP_DISPLAY_ENV``) against what their runs log as ``perf/omp_passive``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from jsonl import read_jsonl

from rnnzoo import waitpolicy

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "trainer.steps=2", "trainer.progress=false", "tracking.wandb_mode=disabled",
    "gradflow.every=0", "task.length=6", "task.val_size=32", "model.hidden_size=8",
    "trainer.batch_size=8",
]  # fmt: skip
#: a busy process: spins until killed, or until its parent (given) is gone
SPIN = "import os,sys\np=int(sys.argv[1])\nwhile os.getppid()==p:\n  for _ in range(10**6): pass\n"
LINUX_PROC = Path("/proc/stat").is_file() and hasattr(os, "sched_getaffinity")


@contextlib.contextmanager
def busy_processes(count: int = 2) -> Iterator[None]:
    """``count`` processes spinning on this process's CPUs while the block runs."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN, str(os.getpid())]) for _ in range(count)
    ]
    try:
        time.sleep(0.5)  # running, past their start-up
        yield
    finally:
        for p in spinners:
            p.kill()
        for p in spinners:
            p.wait()


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["train", "experiments/adding.yaml"], "train"),
        (["--debug", "train", "x.yaml"], "train"),
        (["-p", "train", "cells"], "cells"),  # a plugin file named train
        (["--plugin", "a.py", "--debug", "train"], "train"),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_is_found_past_the_group_options(args, command):
    assert waitpolicy.command_of(args) == command


def test_every_group_option_that_takes_a_value_is_skipped():
    from rnnzoo.cli import cli

    valued = {
        name
        for param in cli.params
        if isinstance(param, click.Option) and not param.is_flag and not param.count
        for name in (*param.opts, *param.secondary_opts)
    }
    assert valued == set(waitpolicy._VALUED_OPTIONS)


def test_busy_ticks_count_the_processes_cpus_and_leave_out_idle_time():
    stat = (
        "cpu  900 0 900 900 900 0 0 900 0 0\n"  # all CPUs: not counted
        "cpu0 10 1 2 100 3 4 5 6 0 0\n"
        "cpu1 20 0 0 50 50 0 0 0 0 0\n"
        "cpu2 70 0 0 30 0 0 0 0 0 0\n"  # not ours
        "intr 12345 0 0\n"
    )
    assert waitpolicy.busy_ticks(stat, {0, 1}) == (
        (10 + 1 + 2 + 4 + 5 + 6) + 20,  # user, nice, system, irqs, steal
        131 + 120,
    )
    assert waitpolicy.busy_ticks(stat, {0, 3}) is None  # cpu3 is not listed: no guess


def never() -> float:
    raise AssertionError("measured although the answer did not depend on it")


@pytest.mark.parametrize(
    ("environ", "args", "busy", "policy"),
    [
        ({}, ["train", "x.yaml"], 0.1, None),  # idle: OpenMP's default
        ({}, ["train", "x.yaml"], 0.7, "PASSIVE"),  # busy
        ({}, ["train", "x.yaml"], None, "PASSIVE"),  # cannot tell
        ({}, ["eval", "runs/a"], never, "PASSIVE"),  # every other command
        ({}, ["--version"], never, "PASSIVE"),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, ["train"], never, "ACTIVE"),  # the user's value
        ({"LOCAL_WORLD_SIZE": "2"}, ["train"], never, "PASSIVE"),  # ranks share the cores
        ({"LOCAL_WORLD_SIZE": "1"}, ["train"], 0.0, None),
    ],
)
def test_the_policy_follows_the_command_and_how_busy_the_cpus_are(environ, args, busy, policy):
    environ = dict(environ)
    measure = busy if callable(busy) else lambda: busy
    waitpolicy.choose(environ, args, measure)
    assert environ.get("OMP_WAIT_POLICY") == policy


@pytest.mark.parametrize(
    ("value", "passive"),
    [("PASSIVE", True), (" passive", True), ("ACTIVE", False), ("", False), (None, False)],
)
def test_passive_reads_the_variable_as_openmp_does(value, passive):
    environ = {} if value is None else {"OMP_WAIT_POLICY": value}
    assert waitpolicy.passive(environ) is passive


@pytest.mark.parametrize(("busy", "policy"), [(0.0, None), (1.5, "PASSIVE")])
def test_the_entry_point_chooses_before_the_command_line_runs(busy, policy, monkeypatch):
    """``rnnzoo train`` through the console script's function: the policy is in the
    environment when the command line (which loads torch) starts."""
    import rnnzoo.__main__ as entry
    import rnnzoo.cli

    seen = []
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(sys, "argv", ["rnnzoo", "train", "experiments/adding.yaml"])
    monkeypatch.setattr(waitpolicy, "others_busy_cores", lambda: busy)
    monkeypatch.setattr(waitpolicy, "_chosen", False)
    monkeypatch.setattr(rnnzoo.cli, "main", lambda: seen.append(os.environ.get("OMP_WAIT_POLICY")))
    entry.main()
    assert seen == [policy]


@pytest.mark.parametrize(
    ("user", "chosen", "jobs", "policy"),
    [
        (None, False, 1, None),  # one run at a time chooses at its own launch
        (None, True, 1, None),  # ... even where this process chose passive
        (None, True, 2, "PASSIVE"),  # runs at once share the cores
        ("ACTIVE", False, 2, "ACTIVE"),  # the user's value goes everywhere
    ],
)
def test_the_runs_of_a_grid_choose_for_themselves_unless_they_share_the_cores(
    user, chosen, jobs, policy, monkeypatch
):
    environ = {"PATH": "/bin"}
    if user is not None:
        environ["OMP_WAIT_POLICY"] = user
    elif chosen:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"
    monkeypatch.setattr(waitpolicy, "_chosen", chosen)
    env = waitpolicy.for_runs(environ, jobs)
    assert env.get("OMP_WAIT_POLICY") == policy and env["PATH"] == "/bin"


def test_a_grid_launches_its_runs_with_that_environment(monkeypatch, tmp_path):
    from rnnzoo.commands import multirun
    from rnnzoo.multirun import Job

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    launches = {}
    for jobs in (1, 2):
        job = Job(0, ("trainer.seed=0",), ("trainer.seed=0",))
        launch = multirun.launch("experiments/adding.yaml", job, tmp_path, (), [], jobs)
        launches[jobs] = launch.env.get("OMP_WAIT_POLICY")
    assert launches == {1: None, 2: "PASSIVE"}


@pytest.mark.skipif(not LINUX_PROC, reason="CPU use is read from Linux's /proc/stat")
def test_a_cpu_quota_below_the_cpus_is_not_measured(monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.setattr(waitpolicy, "cpu_quota", lambda: cpus - 0.5)
    assert waitpolicy.others_busy_cores() is None
    monkeypatch.setattr(waitpolicy, "cpu_quota", lambda: float(cpus))
    assert waitpolicy.others_busy_cores() is not None


@pytest.mark.skipif(not LINUX_PROC, reason="CPU use is read from Linux's /proc/stat")
def test_other_processes_spinning_count_as_busy(monkeypatch):
    monkeypatch.setattr(waitpolicy, "cpu_quota", lambda: None)  # sample even in a container
    with busy_processes():
        busy = waitpolicy.others_busy_cores(0.3)
    assert busy is not None
    assert busy >= waitpolicy.BUSY_CORES


# -- real processes ----------------------------------------------------------------


def openmp_run(command: list[str], args: list[str], env: dict[str, str]) -> str:
    """What the OpenMP runtime torch loads read from the environment, as it prints
    it (``OMP_DISPLAY_ENV``) when a real ``rnnzoo`` process starts."""
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env={**environ, **env, "OMP_DISPLAY_ENV": "VERBOSE"},
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if "GOMP_SPINCOUNT" not in done.stderr:
        pytest.skip("torch does not use GNU OpenMP here, whose settings these tests read")
    return done.stderr


@pytest.mark.parametrize("how", ["script", "module"])
def test_commands_other_than_train_wait_passively_unless_told_otherwise(how):
    script = shutil.which("rnnzoo", path=str(Path(sys.executable).parent))
    if how == "script" and script is None:
        pytest.skip("no rnnzoo console script beside this Python: pip install -e .")
    command = [script] if how == "script" else [sys.executable, "-m", "rnnzoo"]
    assert command[0] is not None
    passive = openmp_run(command, ["--version"], {})
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in passive
    assert "GOMP_SPINCOUNT = '0'" in passive  # threads sleep at once
    active = openmp_run(command, ["--version"], {"OMP_WAIT_POLICY": "ACTIVE"})
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in active  # the user's value is kept
    # a program that imports rnnzoo keeps OpenMP's default: spin, then sleep
    default = openmp_run([sys.executable, "-c", "import rnnzoo.cli; import sys"], [], {})
    assert "GOMP_SPINCOUNT = '0'" not in default


def train_policy(tmp_path: Path) -> tuple[bool, float]:
    """One real ``python -m rnnzoo train``: whether OpenMP's threads waited
    passively, and the ``perf/omp_passive`` its run logged."""
    run_dir = tmp_path / "run"
    # a pinned count of 2 logs how its threads wait at the start
    args = ["train", "experiments/adding.yaml", "--run-dir", str(run_dir), *TINY]
    args.append("trainer.threads=2")
    settings = openmp_run([sys.executable, "-m", "rnnzoo"], args, {})
    logged = [r["perf/omp_passive"] for r in read_jsonl(run_dir / "metrics.jsonl")
              if "perf/omp_passive" in r]  # fmt: skip
    assert len(logged) == 1
    # libgomp names an unset policy PASSIVE too; its spin count tells them apart
    return "GOMP_SPINCOUNT = '0'" in settings, logged[0]


@pytest.mark.skipif(not LINUX_PROC, reason="CPU use is read from Linux's /proc/stat")
def test_training_on_a_busy_machine_waits_passively_and_logs_it(tmp_path):
    with busy_processes():
        passive, logged = train_policy(tmp_path)
    assert passive  # threads sleep at once
    assert logged == 1.0


def test_a_run_logs_the_policy_openmp_ran_with(tmp_path):
    # idle or not, as the machine happens to be: the log says what OpenMP did
    passive, logged = train_policy(tmp_path)
    assert logged == float(passive)
