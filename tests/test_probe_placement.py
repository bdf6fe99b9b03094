"""With ``gradflow.process=auto`` a probe runs where it costs the training thread
less: in the probe process while that answers quickly, in training while waiting
for the process costs more than probing, with a try of the other place every few
probes so that a change of load is followed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from jsonl import read_jsonl
from test_probe_process import WAIT, train

from rnnzoo.probe_process import Placement, ProbeProcess


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


def test_auto_probes_in_training_while_the_probe_process_costs_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rnnzoo_plugins import gradflow_probes

    handed: list[int] = []

    class Slow(ProbeProcess):
        """Ready before the first probe; answers 0.2 s late, as when other work
        holds the core it runs on."""

        def __init__(self, model: Any) -> None:
            super().__init__(model)
            assert self.wait_ready(WAIT)

        def probe(self, step: int, *args: Any) -> None:
            handed.append(step)
            super().probe(step, *args)

        def answer(self, timeout: float | None = 0.0) -> Any:
            time.sleep(0.2)
            return super().answer(timeout)

    monkeypatch.setattr(gradflow_probes, "ProbeProcess", Slow)
    steps = 4 * gradflow_probes.AUTO_PROBES  # a probe every 4 steps
    train(tmp_path / "run", "auto", [f"trainer.steps={steps}"])
    # step 4 aside (0.2 s), 8 here (milliseconds), then here but every 5th probe;
    # the last probe (step 40) always runs in training
    assert handed == [4, 20]
    records = read_jsonl(tmp_path / "run" / "gradflow.jsonl")
    assert [r["step"] for r in records] == list(range(4, steps + 1, 4))
