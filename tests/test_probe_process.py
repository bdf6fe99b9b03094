"""Gradient-flow probes run in the probe process: they measure what probes in the
training process would, are logged under the step they measured, and go back to
the training process when the probe process cannot start, cannot take the model
or dies. A probe lost when training stops runs again when the run resumes."""

from __future__ import annotations

import json
import math
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from jsonl import read_jsonl
from wandb_records import read_run, run_files

from rnnzoo import Batch, Cell, State, TaskSpec, build_model, config, gradflow, hookimpl
from rnnzoo.events import TrainingRun
from rnnzoo.plugins import plugin_manager
from rnnzoo.probe_process import ProbeProcess, ProbeProcessError
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer

WAIT = 120.0  # seconds: the process imports torch, on a busy machine too


def overrides(process: str, steps: int = 16) -> list[str]:
    return [
        "task.length=10",
        "task.val_size=8",
        "model.cell=lstm",
        "model.hidden_size=6",
        "trainer.batch_size=4",
        f"trainer.steps={steps}",
        "trainer.log_every=2",
        "trainer.eval_every=8",
        "trainer.checkpoint_every=8",
        "trainer.threads=1",
        "trainer.progress=false",
        "trainer.device=cpu",
        "gradflow.every=4",
        "gradflow.batch_size=4",
        f"gradflow.process={process}",
        "tracking.wandb_mode=disabled",
    ]


def train(run_dir: Path, process: str, more: Sequence[str] = (), pm: Any = None) -> None:
    cfg = config.load(None, [*overrides(process), *more])
    Trainer(cfg, Registry(pm or plugin_manager()), run_dir).fit()


@pytest.fixture
def probed_here(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per probe run in this (the training) process."""
    calls: list[int] = []
    probe = gradflow.probe

    def counted(*args: Any, **kwargs: Any) -> gradflow.GradflowResult:
        calls.append(1)
        return probe(*args, **kwargs)

    monkeypatch.setattr(gradflow, "probe", counted)
    return calls


def assert_same_numbers(a: Any, b: Any, where: str = "") -> None:
    """Equal structure, numbers equal to float32 rounding (the two processes may
    take different CPU code paths)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_numbers(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_numbers(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)


def test_the_probe_process_measures_what_the_training_process_would() -> None:
    torch.manual_seed(0)
    spec = TaskSpec("real", 3, "classes", 5, per_token=True)
    model = build_model(
        spec, cell="lstm", hidden_size=6, num_layers=2, bidirectional=True, head="per_token"
    )
    process = ProbeProcess(model)
    assert process.wait_ready(WAIT)
    with torch.no_grad():  # the process must probe these weights, not the first ones
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    inputs = torch.randn(40, 7, 3)[::10]  # a view: only its own rows may travel
    batch = Batch(
        inputs=inputs, targets=torch.randint(0, 5, (4, 7)), lengths=torch.tensor([7, 5, 2, 6])
    )
    process.probe(11, model, batch, -1)
    answer = process.answer(WAIT)
    assert answer is not None
    step, aside = answer
    here = gradflow.probe(model, batch)
    assert step == 11
    assert_same_numbers(vars(aside), vars(here))
    process.close()
    assert process.process.poll() is not None


def test_a_dead_probe_process_says_so() -> None:
    spec = TaskSpec("real", 2, "real", 1, per_token=False)
    model = build_model(spec, cell="elman", hidden_size=4)
    process = ProbeProcess(model)
    assert process.wait_ready(WAIT)
    process.process.kill()
    process.process.wait()
    batch = Batch(inputs=torch.randn(2, 5, 2), targets=torch.randn(2))
    with pytest.raises(ProbeProcessError):
        process.probe(1, model, batch, -1)
        process.answer(WAIT)


class LogEveryStep:
    """Logs a value at every step, as step_end ends (as the threads plugin may): a
    probe that answers a step or two later is logged after it."""

    @hookimpl
    def rnnzoo_step_end(self, run: TrainingRun, step: int) -> None:
        run.log({"test/step": float(step)})


def test_a_run_logs_from_the_probe_process_what_it_would_probe_itself(
    tmp_path: Path, probed_here: list[int]
) -> None:
    pm = plugin_manager()
    pm.register(LogEveryStep())
    train(tmp_path / "aside", "always", pm=pm)
    assert len(probed_here) == 1  # the last one: nothing follows it to wait for it
    train(tmp_path / "here", "never")
    assert len(probed_here) == 1 + 4
    aside, here = (read_jsonl(tmp_path / run / "gradflow.jsonl") for run in ("aside", "here"))
    assert [r["step"] for r in aside] == [4, 8, 12, 16]
    assert_same_numbers(aside, here)
    rows = read_jsonl(tmp_path / "aside" / "metrics.jsonl")
    for key in ("test/step", "gradflow/reach10", "train/loss"):  # each in step order
        steps = [r["step"] for r in rows if key in r]
        assert steps == sorted(steps), key
    probed = {r["step"]: r for r in rows if "gradflow/reach10" in r}
    rows_here = read_jsonl(tmp_path / "here" / "metrics.jsonl")
    expected = {r["step"]: r for r in rows_here if "gradflow/reach10" in r}
    assert sorted(probed) == sorted(expected) == [4, 8, 12, 16]
    for step, row in expected.items():  # the gradient norms of the probe's step come along
        assert "grad/preclip/recurrence.cells.0.weight_hh" in row
        assert_same_numbers(probed[step], row)


def test_w_and_b_gets_the_probes_of_the_process_at_their_steps(tmp_path: Path) -> None:
    train(tmp_path / "run", "always", ["tracking.wandb_mode=offline"])
    (log,) = run_files(tmp_path / "run")
    history = read_run(log).history
    probes = [h for h in history if "gradflow/reach10" in h]
    assert [h["trainer/step"] for h in probes] == [4, 8, 12, 16]
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    logged = {r["step"]: r for r in rows if "gradflow/reach10" in r}
    for h in probes:
        assert h["gradflow/decay"] == pytest.approx(logged[h["trainer/step"]]["gradflow/decay"])


class KillProbeProcess:
    """Kills the probe process as step ``at`` ends."""

    def __init__(self, at: int) -> None:
        self.at = at

    @hookimpl
    def rnnzoo_step_end(self, run: TrainingRun, step: int) -> None:
        from rnnzoo_plugins import gradflow_probes

        process = gradflow_probes._active[run].process
        if step == self.at and process is not None:
            process.wait_ready(WAIT)
            process.process.kill()
            process.process.wait()


def test_probes_go_back_to_training_when_the_probe_process_dies(
    tmp_path: Path, probed_here: list[int], capfd: pytest.CaptureFixture[str]
) -> None:
    pm = plugin_manager()
    pm.register(KillProbeProcess(at=6))  # between probes: none is in flight
    train(tmp_path / "run", "always", pm=pm)
    err = capfd.readouterr().err
    assert "gradient-flow probes: handing over the probe failed" in err
    assert "they run in the training process from now on" in err
    assert len(probed_here) == 3  # steps 8, 12 and 16
    records = read_jsonl(tmp_path / "run" / "gradflow.jsonl")
    assert [r["step"] for r in records] == [4, 8, 12, 16]


class Unpicklable(Cell):
    """An Elman cell holding a lambda, which pickle cannot copy to another process."""

    def __init__(self, input_size: int, hidden_size: int, **_: Any) -> None:
        super().__init__(input_size, hidden_size)
        self.linear = torch.nn.Linear(input_size + hidden_size, hidden_size)
        self.squash = lambda z: torch.tanh(z)

    def forward(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h = self.squash(self.linear(torch.cat([x_t, state[0]], -1)))
        return h, (h,)


class UnpicklablePlugin:
    @hookimpl
    def rnnzoo_cells(self) -> dict[str, Any]:
        return {"unpicklable": Unpicklable}


def test_a_model_that_cannot_be_copied_is_probed_in_training(
    tmp_path: Path, probed_here: list[int], capfd: pytest.CaptureFixture[str]
) -> None:
    pm = plugin_manager()
    pm.register(UnpicklablePlugin())
    train(tmp_path / "run", "always", ["model.cell=unpicklable"], pm=pm)
    assert "the probe process could not start" in capfd.readouterr().err
    assert len(probed_here) == 4
    assert len(read_jsonl(tmp_path / "run" / "gradflow.jsonl")) == 4


def test_auto_keeps_a_short_run_s_probes_in_training(
    tmp_path: Path, probed_here: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rnnzoo_plugins import gradflow_probes

    started: list[int] = []

    class Counted(ProbeProcess):
        def __init__(self, model: Any) -> None:
            started.append(1)
            super().__init__(model)

    monkeypatch.setattr(gradflow_probes, "ProbeProcess", Counted)
    train(tmp_path / "short", "auto")  # 4 probes: not worth a process
    assert started == [] and len(probed_here) == 4
    steps = 4 * gradflow_probes.AUTO_PROBES
    train(tmp_path / "long", "auto", [f"trainer.steps={steps}"])
    assert started == [1]
    assert len(read_jsonl(tmp_path / "long" / "gradflow.jsonl")) == gradflow_probes.AUTO_PROBES


def test_auto_probes_in_training_when_its_threads_use_every_core(
    tmp_path: Path, probed_here: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rnnzoo_plugins import gradflow_probes

    monkeypatch.setattr(gradflow_probes, "available_cores", lambda: 1)  # 1 thread, 1 core
    steps = 4 * gradflow_probes.AUTO_PROBES
    train(tmp_path / "run", "auto", [f"trainer.steps={steps}"])
    assert len(probed_here) == gradflow_probes.AUTO_PROBES


def test_a_probe_lost_at_a_stop_runs_again_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(run, "never", ["trainer.steps=8"])
    records = (run / "gradflow.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in records] == [4, 8]
    # as if training had stopped while the probe process had the probe of step 8
    (run / "gradflow.jsonl").write_text(records[0] + "\n")
    more = config.load(run / "config.yaml", ["trainer.steps=12"])
    Trainer(more, Registry(plugin_manager()), run, resume=True).fit()
    again = read_jsonl(run / "gradflow.jsonl")
    assert [r["step"] for r in again] == [4, 8, 12]
    assert_same_numbers(again[1], json.loads(records[1]))  # the checkpoint's weights


class NeverEarly(ProbeProcess):
    """Ready before the first probe; an answer is in only when waited for."""

    def __init__(self, model: Any) -> None:
        super().__init__(model)
        assert self.wait_ready(WAIT)

    def answer(self, timeout: float | None = 0.0) -> Any:
        return None if timeout == 0.0 else super().answer(timeout)


class Interrupt:
    """Sends this process SIGINT (Ctrl-C) during step ``during``: the trainer
    finishes the step, writes a checkpoint and stops."""

    def __init__(self, during: int) -> None:
        self.during = during

    @hookimpl
    def rnnzoo_after_backward(self, step: int) -> None:
        if step + 1 == self.during:
            os.kill(os.getpid(), signal.SIGINT)


class InterruptLate:
    """Sends SIGINT at the end of step ``at``, after the probes looked for an answer."""

    def __init__(self, at: int) -> None:
        self.at = at

    @hookimpl(trylast=True)
    def rnnzoo_step_end(self, step: int) -> None:
        if step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("when", ["probe step", "next step", "after the look"])
def test_a_stop_loses_no_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str) -> None:
    """Stopped at a probe step, the probe runs in training; stopped at a later
    step, the probe in flight is logged before training stops, also when the
    signal comes after that step's look for the answer (never in at a look here)."""
    from rnnzoo_plugins import gradflow_probes

    monkeypatch.setattr(gradflow_probes, "ProbeProcess", NeverEarly)
    pm = plugin_manager()
    pm.register(
        InterruptLate(5) if when == "after the look" else Interrupt(4 + (when != "probe step"))
    )
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(run, "always", pm=pm)
    records = run / "gradflow.jsonl"
    assert [r["step"] for r in read_jsonl(records)] == [4]
    more = config.load(run / "config.yaml", [])
    Trainer(more, Registry(plugin_manager()), run, resume=True).fit()
    assert [r["step"] for r in read_jsonl(records)] == [4, 8, 12, 16]
