"""The hook contract: every hook documented and typed, and the event hooks called as
their docstrings say."""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cli_run import rnnzoo, write

from rnnzoo import checkpoint, config, hookimpl, hookspecs
from rnnzoo.events import TrainingRun
from rnnzoo.plugins import HOOKS, plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer

ROOT = Path(__file__).resolve().parents[1]


def hooks(module: ModuleType) -> dict[str, Callable[..., Any]]:
    return {name: getattr(module, name) for name in dir(module) if name.startswith("rnnzoo_")}


def problems(name: str, hook: Callable[..., Any]) -> list[str]:
    """What is undocumented or untyped about one hook specification."""
    found = []
    if getattr(hook, "rnnzoo_spec", None) is None:
        found.append(f"{name} is not marked with @hookspec")
    doc = inspect.getdoc(hook) or ""
    if not doc.strip():
        return [*found, f"{name} has no docstring"]
    signature = inspect.signature(hook)
    params = list(signature.parameters.values())
    for p in params:
        if p.annotation is inspect.Parameter.empty:
            found.append(f"{name}: parameter {p.name} has no type")
        if not re.search(rf"^:param {p.name}: \S", doc, re.MULTILINE):
            found.append(f"{name}: parameter {p.name} is not documented (:param {p.name}: ...)")
    documented = re.findall(r"^:param (\w+):", doc, re.MULTILINE)
    for extra in set(documented) - {p.name for p in params}:
        found.append(f"{name}: documents a parameter {extra} it does not have")
    if signature.return_annotation is inspect.Signature.empty:
        found.append(f"{name} has no return type")
    elif signature.return_annotation not in ("None", None) and ":returns:" not in doc:
        found.append(f"{name} returns a value but does not document it (:returns: ...)")
    return found


def test_every_hook_is_documented_and_typed() -> None:
    specs = hooks(hookspecs)
    assert len(specs) >= 11
    report = [p for name, hook in specs.items() for p in problems(name, hook)]
    assert not report, "\n".join(report)


def test_the_check_catches_an_undocumented_hook() -> None:
    fake = ModuleType("fake_hookspecs")
    exec(
        inspect.cleandoc(
            '''
            from rnnzoo.hookspecs import hookspec

            @hookspec
            def rnnzoo_documented(trainer: object, step: int) -> None:
                """Called sometimes.

                :param trainer: the trainer.
                :param step: the step.
                """

            @hookspec
            def rnnzoo_half(trainer: object, step) -> None:
                """Called sometimes.

                :param trainer: the trainer.
                :param stpe: a typo.
                """

            @hookspec
            def rnnzoo_registers() -> dict:
                """Register things."""

            def rnnzoo_bare(trainer: object) -> None:
                pass
            '''
        ),
        fake.__dict__,
    )
    found = {name: problems(name, hook) for name, hook in hooks(fake).items()}
    assert found["rnnzoo_documented"] == []
    assert found["rnnzoo_half"] == [
        "rnnzoo_half: parameter step has no type",
        "rnnzoo_half: parameter step is not documented (:param step: ...)",
        "rnnzoo_half: documents a parameter stpe it does not have",
    ]
    assert found["rnnzoo_registers"] == [
        "rnnzoo_registers returns a value but does not document it (:returns: ...)"
    ]
    assert found["rnnzoo_bare"] == [
        "rnnzoo_bare is not marked with @hookspec",
        "rnnzoo_bare has no docstring",
    ]


def test_the_plugin_manager_knows_every_hook() -> None:
    pm = plugin_manager()
    assert set(HOOKS) == set(hooks(hookspecs))
    for name, params in HOOKS.items():
        caller = getattr(pm.hook, name)
        assert caller.spec is not None and caller.spec.argnames == params


def test_event_hooks_are_called_as_documented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin sees train start, each backward and step, each evaluation and the end."""
    log = tmp_path / "events.jsonl"
    plugin = write(
        tmp_path / "recorder.py",
        f"""
        import json

        from rnnzoo import hookimpl


        def note(*event):
            with open({str(log)!r}, "a") as f:
                f.write(json.dumps(event) + "\\n")


        @hookimpl
        def rnnzoo_train_start(run):
            note("start", run.step, run.config.trainer.steps, str(run.run_dir))


        @hookimpl
        def rnnzoo_after_backward(run, step):
            grads = [p.grad for p in run.model.parameters()]
            note("backward", step, run.step, all(g is not None for g in grads))


        @hookimpl
        def rnnzoo_step_end(step, metrics):  # any subset of the parameters
            note("step_end", step, "train/loss" in metrics)


        @hookimpl
        def rnnzoo_eval_end(run, step, metrics):
            note("eval_end", step, "val/loss" in metrics)


        @hookimpl
        def rnnzoo_train_end(run, summary):
            note("end", run.step, summary["step"])
        """,
    )
    monkeypatch.delenv("RNNZOO_TRACE_PLUGINS", raising=False)
    run_dir = tmp_path / "run"
    result = rnnzoo(
        "-p",
        plugin,
        "train",
        ROOT / "experiments" / "adding.yaml",
        "--run-dir",
        run_dir,
        "trainer.steps=4",
        "trainer.eval_every=2",
        "trainer.batch_size=4",
        "trainer.progress=false",
        "task.length=6",
        "task.val_size=8",
        "model.hidden_size=4",
        "gradflow.every=0",
        "tracking.wandb_mode=disabled",
    )
    assert result.code == 0, result.output
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert events == [
        ["start", 0, 4, str(run_dir)],
        ["backward", 0, 0, True],
        ["step_end", 1, True],
        ["backward", 1, 1, True],
        ["step_end", 2, True],
        ["eval_end", 2, True],
        ["backward", 2, 2, True],
        ["step_end", 3, True],
        ["backward", 3, 3, True],
        ["step_end", 4, True],
        ["eval_end", 4, True],
        ["end", 4, 4.0],
    ]


@pytest.mark.parametrize("stop", ["signal", "budget"])
def test_a_stop_is_announced_to_plugins(tmp_path: Path, stop: str) -> None:
    """``run.stopping`` is true at the end of the step after which training stops.
    Stopped by a signal (Ctrl-C during step 2), training ends with
    ``rnnzoo_train_interrupted`` after that step's checkpoint; stopped by a budget
    (48 tokens: two steps), with ``rnnzoo_train_end``."""
    events: list[tuple[Any, ...]] = []

    class Recorder:
        @hookimpl
        def rnnzoo_after_backward(self, step: int) -> None:
            if stop == "signal" and step == 1:
                os.kill(os.getpid(), signal.SIGINT)

        @hookimpl
        def rnnzoo_step_end(self, run: TrainingRun, step: int) -> None:
            events.append(("step_end", step, run.stopping))

        @hookimpl
        def rnnzoo_train_interrupted(self, run: TrainingRun) -> None:
            saved = [p.name for p in checkpoint.list_checkpoints(run.run_dir)]
            events.append(("interrupted", run.step, saved))

        @hookimpl
        def rnnzoo_train_end(self, run: TrainingRun) -> None:
            events.append(("end", run.step))

    small = ["task.length=6", "trainer.batch_size=4", "model.hidden_size=4", "trainer.steps=6"]
    quiet = ["gradflow.every=0", "tracking.wandb_mode=disabled", "trainer.progress=false"]
    budget = ["trainer.max_tokens=48"] if stop == "budget" else []
    cfg = config.load(ROOT / "experiments" / "adding.yaml", [*small, *quiet, *budget])
    pm = plugin_manager()
    pm.register(Recorder())
    trainer = Trainer(cfg, Registry(pm), tmp_path / "run")
    if stop == "signal":
        with pytest.raises(KeyboardInterrupt):
            trainer.fit()
    else:
        trainer.fit()
    last = ("interrupted", 2, ["ckpt-00000002.pt"]) if stop == "signal" else ("end", 2)
    assert events == [("step_end", 1, False), ("step_end", 2, True), last]
