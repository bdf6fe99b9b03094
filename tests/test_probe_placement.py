"""With ``gradflow.process=auto`` a probe runs where it costs the training thread
less: in the probe process while that answers quickly, in training while waiting
for the process costs more than probing, with a try of the other place every few
probes so that a change of load is followed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from jsonl import read_jsonl
from test_probe_process import WAIT, NeverEarly, train

from rnnzoo import build_model, hookimpl
from rnnzoo.events import TrainingRun
from rnnzoo.plugins import plugin_manager
from rnnzoo.probe_process import Placement, ProbeProcess
from rnnzoo.registry import Registry


def test_placement_tries_both_then_keeps_the_cheaper_and_rechecks() -> None:
    placement = Placement(recheck=5)
    chosen = []
    costs = {"aside": 0.001, "here": 0.010}
    for _ in range(10):
        where = placement.choose()
        chosen.append(where)
        placement.record(where, costs[where])
    # each tried once, then the cheaper, and every 5th choice the other
    assert chosen == ["aside", "here", "aside", "aside", "here"] + ["aside"] * 4 + ["here"]
    costs["aside"] = 0.050  # the probe process's core got busy
    for _ in range(5):
        where = placement.choose()
        chosen.append(where)
        placement.record(where, costs[where])
    # the next probe aside finds it slow; from then on here, every 5th aside
    assert chosen[10:] == ["aside", "here", "here", "here", "aside"]


@pytest.mark.parametrize("cost", ["late answers", "a shared core"])
def test_auto_probes_in_training_while_the_probe_process_costs_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cost: str
) -> None:
    from rnnzoo_plugins import gradflow_probes

    handed: list[int] = []

    class Costly(ProbeProcess):
        """Ready before the first probe; each answer costs training 0.2 s: it comes
        that late, or the process says it waited that long for its core."""

        def __init__(self, model: Any) -> None:
            super().__init__(model)
            assert self.wait_ready(WAIT)

        def probe(self, step: int, *args: Any) -> None:
            handed.append(step)
            super().probe(step, *args)

        def answer(self, timeout: float | None = 0.0) -> Any:
            if cost == "late answers":
                time.sleep(0.2)
            answer = super().answer(timeout)
            if cost == "a shared core":
                self.shared_core = 0.2
            return answer

    monkeypatch.setattr(gradflow_probes, "ProbeProcess", Costly)
    steps = 4 * gradflow_probes.AUTO_PROBES  # a probe every 4 steps
    train(tmp_path / "run", "auto", [f"trainer.steps={steps}"])
    # step 4 aside (0.2 s), 8 here (milliseconds), then here but every 5th probe;
    # the last probe (step 40) always runs in training
    assert handed == [4, 20]
    records = read_jsonl(tmp_path / "run" / "gradflow.jsonl")
    assert [r["step"] for r in records] == list(range(4, steps + 1, 4))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs os.sched_setaffinity")
def test_the_probe_process_reports_the_time_another_process_took_from_its_core() -> None:
    """Pinned to one core with a busy loop, the probe process gets about half of
    it: it reports waiting for a good share of its CPU time."""
    reg = Registry(plugin_manager())
    task = reg.get("task", "adding").factory(length=50)
    model = build_model(task.spec, cell="lstm", hidden_size=64, registry=reg)
    batch = next(iter(task.val_batches(16)))
    process = ProbeProcess(model)
    assert process.wait_ready(WAIT)
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(process.process.pid, {core})
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(busy.pid, {core})
        time.sleep(0.2)  # the busy loop is running
        shared = []
        for step in range(5):
            process.probe(step, model, batch, -1)
            assert process.answer(WAIT) is not None
            shared.append(process.shared_core)
    finally:
        busy.kill()
        busy.wait()
        process.close()
    # a probe takes about 10 ms of CPU at this size; sharing a core, it waits
    # about as long again
    assert sum(shared) > 0.01, shared


@pytest.mark.parametrize(
    ("due", "flight"),
    [
        ({"log_every": 6, "eval_every": 16, "checkpoint_every": 16}, [4, 5, 8, 9, 10, 11]),
        ({"log_every": 16, "eval_every": 6, "checkpoint_every": 10}, [4, 5, 8, 9]),
    ],
)
def test_an_answer_not_yet_in_is_logged_later_and_before_the_trainer_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, due: dict[str, int], flight: list[int]
) -> None:
    """Training goes on while the probe process works. An answer is looked for at
    each step's end without waiting, and waited for only at the end of a step
    after which the trainer logs, evaluates or saves a checkpoint, or the next
    probe is due."""
    from rnnzoo_plugins import gradflow_probes

    class InFlight:
        def __init__(self) -> None:
            self.steps: list[int] = []

        @hookimpl(trylast=True)
        def rnnzoo_step_end(self, run: TrainingRun, step: int) -> None:
            if gradflow_probes.in_flight(run):
                self.steps.append(step)

    monkeypatch.setattr(gradflow_probes, "ProbeProcess", NeverEarly)
    pm = plugin_manager()
    pm.register(watch := InFlight())
    more = [f"trainer.{key}={every}" for key, every in due.items()]
    train(tmp_path / "run", "always", more, pm=pm)  # probes at 4, 8, 12 (aside) and 16
    # 12 is waited for at the end (16), where the last probe runs in training
    assert watch.steps == [*flight, 12, 13, 14, 15]
    lines = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    probed = [(r["step"], i) for i, r in enumerate(lines) if "gradflow/reach10" in r]
    trainer = [(r["step"], i) for i, r in enumerate(lines) if "train/loss" in r or "val/loss" in r]
    assert [step for step, _ in probed] == [4, 8, 12, 16]
    assert all(any(later > step for later, _ in trainer) for step, _ in probed[:3])
    for step, line in probed:  # before the trainer's values of any later step
        assert all(line < at for later, at in trainer if later > step), (step, lines)
