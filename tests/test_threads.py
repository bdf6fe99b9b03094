"""CPU threads: the chooser (fed made-up step times, no clock), the plugin behind
``trainer.threads`` (a fake clock whose steps take longer at some thread counts),
the core count under torchrun and the user's own choice. Nothing here times
anything. The OpenMP wait policy of the command line: ``test_waitpolicy.py``.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from jsonl import read_jsonl

from rnnzoo import config, hookimpl, threads
from rnnzoo.errors import ConfigError
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.threads import ThreadChooser
from rnnzoo.training import Trainer
from rnnzoo_plugins import threads as plugin

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["tracking.wandb_mode=disabled", "trainer.progress=false", "gradflow.every=0"]
SMALL = ["task.length=6", "task.val_size=32", "model.hidden_size=8", "trainer.batch_size=8"]


@pytest.fixture(autouse=True)
def thread_count(monkeypatch: pytest.MonkeyPatch):
    """Each test starts with torch's count pinned to 1, as conftest leaves it, and
    with no count remembered as rnnzoo's own; both are put back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(threads, "_last_set", None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    yield
    torch.set_num_threads(before)


def run_chooser(chooser: ThreadChooser, cost: dict[int, float], steps: int) -> list[int]:
    """Feed ``chooser`` ``steps`` steps whose time depends on the thread count only;
    return the count each step ran at."""
    used = []
    for _ in range(steps):
        n = chooser.threads()
        used.append(n)
        chooser.record(cost[n])
    return used


# -- the chooser -------------------------------------------------------------------


def test_chooser_picks_one_thread_when_two_are_slower():
    chooser = ThreadChooser(options=(1, 2), start=1)
    used = run_chooser(chooser, {1: 0.010, 2: 0.013}, 60)
    assert chooser.chosen == 1
    assert set(used) == {1, 2}  # both were measured
    assert used[-20:] == [1] * 20  # then it stays with the faster


def test_chooser_picks_all_cores_when_they_are_faster():
    chooser = ThreadChooser(options=(1, 4), start=1)
    run_chooser(chooser, {1: 0.010, 4: 0.006}, 60)
    assert chooser.chosen == 4


def test_chooser_prefers_fewer_threads_when_both_are_as_fast():
    chooser = ThreadChooser(options=(1, 2), start=2, tolerance=0.03)
    run_chooser(chooser, {1: 0.0101, 2: 0.0100}, 60)
    assert chooser.chosen == 1


def test_chooser_compares_the_run_time_not_the_typical_step():
    # a busy machine: at 1 thread most steps are quick but every third waits for a
    # core; 2 threads are a little slower per step and never wait. The median step
    # favours 1 thread (10 ms against 12 ms), the time of the run 2 (mean 16.7 ms)
    chooser = ThreadChooser(options=(1, 2), start=1, warmup=0, settle=0, per_block=3)
    ones = iter([0.010, 0.010, 0.030] * 100)
    for _ in range(60):
        n = chooser.threads()
        chooser.record(next(ones) if n == 1 else 0.012)
    assert chooser.chosen == 2
    assert chooser.means()[1] > chooser.means()[2]


def test_one_hiccup_does_not_decide():
    # one step at 1 thread took a second (a page fault, another job's burst): the
    # slowest step of each count is left out, and 1 thread stays the faster
    chooser = ThreadChooser(options=(1, 2), start=1, warmup=0, settle=0, per_block=3)
    ones = iter([1.0] + [0.010] * 100)
    for _ in range(60):
        n = chooser.threads()
        chooser.record(next(ones) if n == 1 else 0.012)
    assert chooser.chosen == 1


def test_chooser_stops_trying_a_far_slower_count_after_two_steps():
    chooser = ThreadChooser(options=(1, 2), start=1, warmup=0, settle=1, per_block=3)
    used = run_chooser(chooser, {1: 0.010, 2: 0.100}, 40)
    assert chooser.chosen == 1
    # one untimed step after the switch and two timed ones at 2 threads, no more
    assert used.count(2) == 3


def test_chooser_follows_a_machine_that_becomes_busy():
    chooser = ThreadChooser(options=(1, 2), start=1, recheck_s=1.0)
    run_chooser(chooser, {1: 0.010, 2: 0.006}, 100)  # idle: two threads win
    assert chooser.chosen == 2
    used = run_chooser(chooser, {1: 0.010, 2: 0.030}, 400)  # now busy
    assert chooser.chosen == 1
    assert used[-50:] == [1] * 50
    run_chooser(chooser, {1: 0.010, 2: 0.006}, 400)  # idle again
    assert chooser.chosen == 2


def test_a_sudden_slowdown_switches_to_one_thread_at_once():
    chooser = ThreadChooser(options=(1, 2), start=1, recheck_s=60.0)
    run_chooser(chooser, {1: 0.010, 2: 0.006}, 100)  # idle: two threads win
    assert chooser.chosen == 2 and not chooser.measuring
    # other work takes the cores: 2 threads now take 40 ms a step, 1 thread 12 ms
    used = run_chooser(chooser, {1: 0.012, 2: 0.040}, 60)  # 2.4 s, far below 60 s
    assert chooser.chosen == 1 and chooser.means() == {}  # nothing measured for it
    watch = chooser.watch
    assert used == [2] * watch + [1] * (60 - watch)  # after the slow steps in a row
    # and the next regular measurement chooses again, by measuring both
    used = run_chooser(chooser, {1: 0.012, 2: 0.040}, 6000)
    assert 2 in used and chooser.chosen == 1 and chooser.means()[1] == pytest.approx(0.012)


def test_slow_steps_with_normal_ones_between_are_not_a_slowdown():
    chooser = ThreadChooser(options=(1, 2), start=1, recheck_s=60.0)
    run_chooser(chooser, {1: 0.010, 2: 0.006}, 100)
    for _ in range(50):  # one step fewer than the watch, then a normal one, over again
        for seconds in [0.030] * (chooser.watch - 1) + [0.006]:
            assert chooser.threads() == 2
            chooser.record(seconds)
    assert not chooser.measuring and chooser.chosen == 2


def test_steps_that_vary_as_measured_are_not_a_slowdown():
    # sequences of varying length: steps at 2 threads take 4 to 12 ms (mean 6 ms
    # with the slowest left out); a stretch of long ones at 16 ms is the task, not
    # other work
    chooser = ThreadChooser(options=(1, 2), start=1, recheck_s=60.0)
    twos, ones = itertools.cycle([0.004, 0.008, 0.012]), itertools.cycle([0.02, 0.03])
    for _ in range(100):
        chooser.record(next(twos) if chooser.threads() == 2 else next(ones))
    assert chooser.chosen == 2 and not chooser.measuring
    assert chooser.decisive * chooser.means()[2] <= 0.016
    for _ in range(20):
        chooser.record(0.016)
    assert chooser.threads() == 2 and not chooser.measuring


def test_slow_steps_at_one_thread_wait_for_the_interval():
    # nothing waits for another thread at 1 thread: a busy machine's slow steps
    # there are left to the regular measurement
    chooser = ThreadChooser(options=(1, 2), start=1, recheck_s=60.0)
    run_chooser(chooser, {1: 0.010, 2: 0.020}, 100)
    assert chooser.chosen == 1
    measured = chooser.means()
    assert [chooser.record(0.030) for _ in range(100)] == [None] * 100
    assert chooser.threads() == 1 and chooser.means() == measured


def test_a_slowdown_where_more_threads_are_still_faster_is_kept():
    # 4 threads slow down from 6 to 14 ms, but 1 thread takes 24 ms
    chooser = ThreadChooser(options=(1, 4), start=1, recheck_s=60.0)
    run_chooser(chooser, {1: 0.024, 4: 0.006}, 100)
    assert chooser.chosen == 4
    assert [chooser.record(0.014) for _ in range(100)] == [None] * 100
    assert chooser.threads() == 4


def test_one_hiccup_while_measuring_does_not_switch_the_watch_off():
    chooser = ThreadChooser(options=(1, 2), start=1, warmup=0, settle=0, recheck_s=60.0)
    twos = iter([0.060] + [0.006] * 100)  # the first timed step at 2 threads: a hiccup
    while chooser.chosen is None:
        chooser.record(next(twos) if chooser.threads() == 2 else 0.010)
    assert chooser.chosen == 2
    used = run_chooser(chooser, {1: 0.012, 2: 0.040}, 20)
    assert used == [2] * chooser.watch + [1] * (20 - chooser.watch)


def test_the_watch_is_set_again_by_each_measurement():
    chooser = ThreadChooser(options=(1, 2), start=1, recheck_s=1.0)
    run_chooser(chooser, {1: 0.010, 2: 0.006}, 100)
    busy, idle = {1: 0.012, 2: 0.040}, {1: 0.010, 2: 0.006}
    for _ in range(2):  # load, then idle until a measurement picks 2 again, twice
        used = run_chooser(chooser, busy, 20)
        assert used[chooser.watch :] == [1] * (20 - chooser.watch)
        run_chooser(chooser, idle, 300)
        assert chooser.chosen == 2 and not chooser.measuring


def test_chooser_rechecks_only_after_its_interval():
    chooser = ThreadChooser(options=(1, 2), start=1, recheck_s=10.0)
    run_chooser(chooser, {1: 0.010, 2: 0.020}, 40)
    assert not chooser.measuring and chooser.chosen == 1
    assert run_chooser(chooser, {1: 0.010, 2: 0.020}, 900) == [1] * 900  # 9 s more
    assert 2 in run_chooser(chooser, {1: 0.010, 2: 0.020}, 101)  # measured again
    assert chooser.chosen == 1


# -- cores and the user's choice ---------------------------------------------------------


def test_ranks_under_torchrun_share_the_cores(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert threads.available_cores() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert threads.available_cores() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads.available_cores() == 1


def test_omp_num_threads_is_the_users_choice_except_torchruns_own_one(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(threads, "_last_set", 1)  # as if rnnzoo had set the count
    assert threads.user_choice() is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.user_choice() == "OMP_NUM_THREADS=3"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.user_choice() == "OMP_NUM_THREADS=1"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun sets 1 when it is unset
    assert threads.user_choice() is None


def test_a_count_set_with_torch_set_num_threads_is_the_users_choice(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(threads, "physical_cores", lambda: 32)
    torch.set_num_threads(3)
    assert threads.user_choice() == "torch.set_num_threads(3)"
    threads.set_threads(3)  # the same count, set by rnnzoo
    assert threads.user_choice() is None


# -- the plugin --------------------------------------------------------------------


class FakeClock:
    """``time.perf_counter`` for the plugin: each call after a step has run adds
    that step's cost at the current torch thread count."""

    def __init__(self, cost: dict[int, float]) -> None:
        self.cost = cost
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def step(self) -> None:
        self.now += self.cost[torch.get_num_threads()]


class FakeRun:
    def __init__(self, threads_setting: str = "auto", device: str = "cpu") -> None:
        cfg = config.load(None, [f"trainer.threads={threads_setting}", "gradflow.every=0"])
        self.config = cfg
        self.device = torch.device("cpu") if device == "cpu" else SimpleNamespace(type=device)
        self.logged: list[dict[str, float]] = []

    def log(self, metrics: dict[str, float]) -> None:
        self.logged.append(dict(metrics))


def choices(run: FakeRun) -> list[dict[str, float]]:
    """The rows in which the plugin logged a thread count."""
    return [row for row in run.logged if "perf/threads" in row]


def train(run: FakeRun, clock: FakeClock, steps: int) -> list[int]:
    """The event hooks as the trainer calls them, on the fake clock."""
    plugin.rnnzoo_train_start(run=run)
    used = []
    for step in range(1, steps + 1):
        used.append(torch.get_num_threads())
        clock.step()
        plugin.rnnzoo_step_end(run=run, step=step)
    plugin.rnnzoo_train_end(run=run)
    return used


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process with two cores whose thread count is torch's default (not pinned)."""
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "user_choice", lambda: None)


def test_auto_picks_the_faster_count_and_logs_it(two_cores, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    clock = FakeClock({1: 0.010, 2: 0.030})
    monkeypatch.setattr(plugin, "time", clock)
    run = FakeRun()
    used = train(run, clock, 80)
    assert used[-30:] == [1] * 30 and 2 in used
    assert choices(run)[0]["perf/threads"] == 1
    assert choices(run)[0]["perf/threads_gain"] == pytest.approx(3.0)
    # how OpenMP's threads wait is logged with the first choice only
    passive = [row.get("perf/omp_passive") for row in run.logged]
    assert passive[0] == 1.0 and set(passive[1:]) <= {None}
    assert torch.get_num_threads() == 1  # what it was before training

    faster = FakeClock({1: 0.010, 2: 0.005})
    monkeypatch.setattr(plugin, "time", faster)
    run = FakeRun()
    used = train(run, faster, 80)
    assert used[-30:] == [2] * 30
    assert [row["perf/threads"] for row in choices(run)] == [2]
    assert torch.get_num_threads() == 1


def test_auto_follows_a_change_in_load(two_cores, monkeypatch):
    clock = FakeClock({1: 0.010, 2: 0.005})
    monkeypatch.setattr(plugin, "time", clock)
    run = FakeRun()
    plugin.rnnzoo_train_start(run=run)
    used = []
    for step in range(1, 20001):
        if step == 10000:
            clock.cost = {1: 0.010, 2: 0.040}  # other jobs start
        used.append(torch.get_num_threads())
        clock.step()
        plugin.rnnzoo_step_end(run=run, step=step)
    plugin.rnnzoo_train_end(run=run)
    chosen = [row["perf/threads"] for row in choices(run)]
    assert chosen[0] == 2 and chosen[-1] == 1
    # within a few dozen steps of the change, not a minute of 40 ms steps later
    assert used[10050:10100] == [1] * 50


@pytest.mark.parametrize("reason", ["OMP_NUM_THREADS=4", "cuda"])
def test_auto_leaves_the_count_alone(reason, monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    if reason == "cuda":
        monkeypatch.setattr(threads, "user_choice", lambda: None)
        run = FakeRun(device="cuda")
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", "4")
        run = FakeRun()
    clock = FakeClock({1: 0.010, 2: 0.001})
    monkeypatch.setattr(plugin, "time", clock)
    assert set(train(run, clock, 60)) == {1}
    assert run.logged == []


def test_a_pinned_count_is_used_logged_and_put_back(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # OpenMP's default: spin first
    cfg = config.load(None, [*QUIET, *SMALL, "trainer.steps=3", "trainer.threads=2"])
    seen = []

    class Watch:
        @hookimpl
        def rnnzoo_after_backward(self) -> None:
            seen.append(torch.get_num_threads())

    registry = Registry(plugin_manager())
    registry.pm.register(Watch())
    Trainer(cfg, registry, tmp_path / "run").fit()
    assert seen == [2, 2, 2]
    assert torch.get_num_threads() == 1
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "perf/threads" in r]
    assert rows == [{"step": 0, "perf/threads": 2, "perf/omp_passive": 0.0}]


def test_a_pinned_count_in_the_test_process_keeps_auto_off(tmp_path):
    """conftest pins torch to 1 thread, so the bit-exact resume tests stay bit-exact."""
    cfg = config.load(None, [*QUIET, *SMALL, "trainer.steps=30"])
    Trainer(cfg, Registry(plugin_manager()), tmp_path / "run").fit()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert not any("perf/threads" in r for r in rows)
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_threads_must_be_auto_or_a_count(value):
    with pytest.raises(ConfigError, match="'trainer.threads' must be auto or a number"):
        config.load(None, [f"trainer.threads={value}"])
