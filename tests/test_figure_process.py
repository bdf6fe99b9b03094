"""The gradient-flow figures drawn in the figure process while training goes on:
the same figures as drawn in the training process, logged to W&B once drawn, and
drawn in the training process after all when the figure process cannot start or
is killed."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import threading
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from wandb_records import read_run, run_files

from rnnzoo import Batch, TaskSpec, build_model, config, gradflow_figures, hookimpl, timeshare
from rnnzoo.errors import TrainingError
from rnnzoo.events import TrainingRun
from rnnzoo.figure_process import FigureProcess
from rnnzoo.gradflow import GradflowResult, probe
from rnnzoo.gradflow_figures import GradflowFigures
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer

KEYS = {"gradflow/grad_h_plot", "gradflow/heatmap"}
HEATMAP = "gradflow/heatmap"
WAIT = 60.0


def probe_result(seed: int) -> GradflowResult:
    torch.manual_seed(seed)
    spec = TaskSpec("real", 2, "real", 1, per_token=False)
    model = build_model(spec, cell="elman", hidden_size=4, head="sequence")
    return probe(model, Batch(inputs=torch.randn(2, 7, 2), targets=torch.randn(2)))


@pytest.fixture
def drawn_here(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The steps of the probes drawn in this (the training) process."""
    steps: list[int] = []
    draw = gradflow_figures.gradflow_figures

    def counted(folder: Path, curves: dict, step: int, *rest: object) -> dict[str, Path]:
        steps.append(step)
        return draw(folder, curves, step, *rest)

    monkeypatch.setattr(gradflow_figures, "gradflow_figures", counted)
    return steps


def test_the_figure_process_draws_what_training_would(tmp_path: Path, drawn_here: list[int]):
    first, second = probe_result(0), probe_result(1)
    aside = GradflowFigures(tmp_path / "aside", share=1e9, first_cost=0.0)
    assert aside.add(10, first) == {} and aside.busy  # handed over, training goes on
    assert set(aside.collect(WAIT)) == KEYS and not aside.busy
    assert aside.add(20, second) == {}  # the second probe's row is sent alone
    images = aside.finish()
    assert set(images) == KEYS and drawn_here == []
    here = GradflowFigures(tmp_path / "here", share=1e9, first_cost=0.0, aside=False)
    here.add(10, first)
    expected = here.add(20, second)
    for key, path in images.items():  # the same figures, byte for byte
        assert path.parent == tmp_path / "aside"
        assert path.read_bytes() == expected[key].read_bytes()
    assert not list(tmp_path.glob("*/*.part"))


def test_figures_are_drawn_here_when_the_figure_process_cannot_start(
    tmp_path: Path,
    drawn_here: list[int],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    def cannot(*args: object, **kwargs: object) -> None:
        raise OSError("no processes left")

    monkeypatch.setattr("rnnzoo.figure_process.launch", cannot)
    figures = GradflowFigures(tmp_path, share=1e9, first_cost=0.0)
    assert set(figures.add(10, probe_result(0))) == KEYS and drawn_here == [10]
    assert not figures.busy
    assert capfd.readouterr() == ("", "")  # no warning


@pytest.mark.parametrize("when", ["drawing", "idle"])
def test_a_killed_figure_process_leaves_the_drawing_to_training(
    tmp_path: Path, drawn_here: list[int], when: str, capfd: pytest.CaptureFixture[str]
) -> None:
    figures = GradflowFigures(tmp_path, share=1e9, first_cost=0.0)
    figures.add(10, probe_result(0))
    assert figures._process is not None
    process = figures._process.process
    if when == "idle":
        assert set(figures.collect(WAIT)) == KEYS
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    if when == "idle":  # the next probe cannot be handed over: drawn here at once
        assert set(figures.add(20, probe_result(1))) == KEYS
        assert drawn_here == [20]
    else:  # the drawing in flight is lost: the end of training draws the latest probe
        assert figures.collect(WAIT) == {} and not figures.busy
        assert set(figures.finish()) == KEYS and drawn_here == [10]
    assert figures._process is None
    assert capfd.readouterr() == ("", "")  # no warning


def test_the_first_drawing_comes_after_about_50_s_of_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The defaults (docs/gradient-flow.md): 1 % of the training thread's CPU time,
    the first drawing counted as 0.5 s."""
    clock = [0.0]
    monkeypatch.setattr(timeshare, "time", SimpleNamespace(thread_time=lambda: clock[0]))
    figures = GradflowFigures(tmp_path, aside=False)
    clock[0] = 49.0
    assert figures.add(10, probe_result(0)) == {}
    clock[0] = 51.0
    assert set(figures.add(20, probe_result(1))) == KEYS


def test_a_figure_process_started_again_is_sent_every_row(
    tmp_path: Path, drawn_here: list[int]
) -> None:
    """After :meth:`close` (a drawing in flight or not) or :meth:`load_state_dict`,
    the next drawing starts a new figure process with the heatmap's rows as they
    are here; a drawing left in flight by :meth:`close` counts as not drawn."""
    closed = GradflowFigures(tmp_path / "closed", share=1e9, first_cost=0.0)
    closed.add(10, probe_result(0))
    closed.close()
    assert set(closed.finish()) == KEYS and drawn_here == [10]
    probes = [probe_result(seed) for seed in range(3)]
    here = GradflowFigures(tmp_path / "here", share=1e9, first_cost=0.0, aside=False)
    for step, result in zip((10, 20, 30), probes, strict=True):
        expected = here.add(step, result)
    figures = GradflowFigures(tmp_path / "aside", share=1e9, first_cost=0.0)
    figures.add(10, probes[0])
    figures.close()  # the drawing in flight is left unanswered
    assert not figures.busy
    figures.add(20, probes[1])
    assert set(figures.collect(WAIT)) == KEYS
    figures.close()
    figures.add(30, probes[2])
    drawn = figures.finish()
    assert drawn[HEATMAP].read_bytes() == expected[HEATMAP].read_bytes()

    resumed = GradflowFigures(tmp_path / "resumed", share=1e9, first_cost=0.0)
    resumed.add(5, probe_result(7))  # rows the resumed run's state replaces
    assert set(resumed.collect(WAIT)) == KEYS
    resumed.load_state_dict(here.state_dict() | {"rows": here.rows[:2], "steps": [10, 20]})
    resumed.add(30, probes[2])
    drawn = resumed.finish()
    assert drawn[HEATMAP].read_bytes() == expected[HEATMAP].read_bytes()


#: a ``sitecustomize`` that holds every import of matplotlib until a file exists
HOLD_MATPLOTLIB = """
import os, sys, time

class Hold:
    def find_spec(self, name, path=None, target=None):
        while name == "matplotlib" and not os.path.exists(os.environ["HOLD_UNTIL"]):
            time.sleep(0.01)

sys.meta_path.insert(0, Hold())
"""


def test_a_large_drawing_is_handed_over_before_the_figure_process_loads_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resumed run's first drawing carries every probe so far, more than a socket
    holds: the figure process reads it before loading matplotlib, so the training
    thread does not wait for that."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(HOLD_MATPLOTLIB)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    monkeypatch.setenv("HOLD_UNTIL", str(tmp_path / "go"))
    process = FigureProcess()
    curves = {k: list(v) for k, v in probe_result(0).per_step.items()}
    rows = [[i + v for v in curves["layer0/dir0"] * 100] for i in range(4000)]  # 25 MB
    draw = (tmp_path / "figures", curves, 4000, rows, range(4000))
    handing = threading.Thread(target=process.draw, args=draw, daemon=True)
    handing.start()
    handing.join(WAIT)
    handed = not handing.is_alive()
    (tmp_path / "go").touch()
    handing.join(WAIT)
    answer = process.answer(WAIT)
    process.close()
    assert handed and answer is not None and answer[0] == "drawn" and set(answer[1]) == KEYS


class SlowStep:
    """At step 3, waits for the figure process to finish drawing the probe of step 2,
    and at the steps ``also``, for a drawing in flight (tryfirst like the built-in
    plugin's and registered after it, so pluggy calls it first: nothing has
    collected the drawing yet)."""

    def __init__(self, also: tuple[int, ...]) -> None:
        self.also = also

    @hookimpl(tryfirst=True)
    def rnnzoo_step_end(self, run: TrainingRun, step: int) -> None:
        from rnnzoo_plugins import gradflow_probes

        figures = gradflow_probes._active[run].figures
        if step == 3:
            assert figures.busy and figures._process is not None
        if step == 3 or (step in self.also and figures.busy):
            assert figures._process is not None
            assert figures._process._conn.poll(WAIT)


@pytest.mark.parametrize("also", [(), (40,)], ids=["first", "last-step-too"])
def test_figures_drawn_aside_reach_wandb_during_training(
    tmp_path: Path, drawn_here: list[int], monkeypatch: pytest.MonkeyPatch, also: tuple[int, ...]
) -> None:
    from rnnzoo_plugins import gradflow_probes

    unlimited = partial(GradflowFigures, share=1e9, first_cost=0.0)
    monkeypatch.setattr(gradflow_probes, "GradflowFigures", unlimited)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    overrides = [
        "task.name=adding",
        "task.length=6",
        "task.val_size=8",
        "model.hidden_size=4",
        "trainer.batch_size=4",
        "trainer.steps=40",
        "trainer.progress=false",
        "gradflow.every=2",
        "gradflow.batch_size=4",
        "gradflow.process=never",  # each probe's drawing is handed over at its own step
        "tracking.wandb_mode=offline",
    ]
    pm = plugin_manager()
    pm.register(SlowStep(also), "slow-step")
    run = tmp_path / "run"
    Trainer(config.load(None, overrides), Registry(pm), run).fit()
    (log,) = run_files(run)
    steps = [h["trainer/step"] for h in read_run(log).history if "gradflow/heatmap/_type" in h]
    # logged at the step where training found the drawing done, and at the end (the
    # last probe's drawing): at the last step twice where that step found one done
    assert steps[0] == 3 and steps[-1] == 40 and steps[:-1] == sorted(set(steps[:-1]))
    assert drawn_here in ([], [40])
    assert all((run / "gradflow" / name).is_file() for name in ("grad_h.png", "heatmap.png"))


class KeepFigureProcess:
    """Keeps the run's figure process, started for the probe of step 2."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    @hookimpl
    def rnnzoo_step_end(self, run: TrainingRun, step: int) -> None:
        from rnnzoo_plugins import gradflow_probes

        process = gradflow_probes._active[run].figures._process
        if step == 3 and process is not None:
            self.processes.append(process.process)


def test_a_failed_run_ends_its_figure_process_without_the_garbage_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rnnzoo_plugins import gradflow_probes

    unlimited = partial(GradflowFigures, share=1e9, first_cost=0.0)
    monkeypatch.setattr(gradflow_probes, "GradflowFigures", unlimited)
    step = Trainer.optimizer_step

    def fails_at_step_5(trainer: Trainer, *args: object) -> bool:
        if trainer.state.step == 4:
            raise TrainingError("the optimizer failed")
        return step(trainer, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Trainer, "optimizer_step", fails_at_step_5)
    overrides = ["task.name=adding", "task.length=6", "task.val_size=8", "model.hidden_size=4",
                 "trainer.batch_size=4", "trainer.steps=10", "trainer.progress=false",
                 "gradflow.every=2", "gradflow.batch_size=4", "tracking.wandb_mode=disabled"]  # fmt: skip
    pm = plugin_manager()
    kept = KeepFigureProcess()
    pm.register(kept, "keep-figure-process")
    gc.disable()  # the run's objects must go when the last reference does
    try:
        with pytest.raises(TrainingError, match="the optimizer failed"):
            Trainer(config.load(None, overrides), Registry(pm), tmp_path / "run").fit()
        (process,) = kept.processes
        assert process.wait(WAIT) == 0  # its end of the socket closed: it ended
    finally:
        gc.enable()
