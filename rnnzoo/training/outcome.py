"""How a run ended: its summary, and what to say when there is nothing to do or
training diverged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rnnzoo import checkpoint
from rnnzoo.task import Task
from rnnzoo.training.evaluate import main_metric
from rnnzoo.training.state import TrainState

#: ``summary["status"]``: how training ended
STATUS = {
    None: "finished",
    "early_stop": "early_stopped",
    "nonfinite": "diverged",
    "budget": "budget_reached",
}


def summary(cfg: DictConfig, task: Task, state: TrainState, wall: float) -> dict[str, Any]:
    key, _ = main_metric(cfg, task)
    values: dict[str, Any] = {
        "step": float(state.step),
        "status": STATUS[state.stopped],
        "train/loss": state.last_train_loss,
        **{k: v for k, v in state.last_eval.items() if k != "step"},
        "train/nonfinite_steps": float(state.nonfinite),
        "time/wall_s": wall,
        "time/train_s": state.elapsed,
        "train/tokens": float(state.tokens),
    }
    if state.best is not None:
        values[f"best/{key}"] = state.best
    values.update({f"baseline/{k}": v for k, v in task.baseline().items()})
    return values


def nothing_to_do(cfg: DictConfig, task: Task, state: TrainState, folder: str) -> str | None:
    """Why a resumed run has nothing left to train (None: it goes on). A run that
    stopped early goes on only when the overrides give it more patience."""
    t = cfg.trainer
    if state.stopped == "early_stop":
        patience = t.early_stop_patience
        if patience > 0 and state.bad_evals >= patience:
            key, _ = main_metric(cfg, task)
            return (
                f"the run in '{folder}' stopped early at step {state.step}: {key} did not "
                f"improve for {state.bad_evals} evaluations (trainer.early_stop_patience="
                f"{patience}). Nothing was changed. To train on, resume with a larger "
                "trainer.early_stop_patience, or 0 to switch early stopping off."
            )
        state.stopped = None
    if state.stopped == "budget":
        if state.over_budget(t):
            return (
                f"the run in '{folder}' used up its budget at step {state.step} "
                f"({state.elapsed:.0f} s, {state.tokens} tokens; trainer.max_time="
                f"{t.max_time}, trainer.max_tokens={t.max_tokens}). Nothing was changed. "
                "To train on, resume with a larger budget (or null)."
            )
        state.stopped = None
    if state.step >= t.steps:
        return (
            f"the run in '{folder}' already finished at step {state.step} "
            f"(trainer.steps={t.steps}). Nothing was changed. To train longer, resume "
            f"with trainer.steps above {state.step}."
        )
    return None


def set_aside_diverged(state: TrainState, run_dir: Path) -> str:
    """Set aside the checkpoints written since the trouble started (a resumed run
    goes on from the last one trained on finite values); returns what to say."""
    checkpoint.retract(run_dir, state.trouble_start or 0)
    found = checkpoint.list_checkpoints(run_dir)
    return diverged(state, str(run_dir), checkpoint.step_of(found[-1]) if found else None)


def diverged(state: TrainState, folder: str, resume_from: int | None) -> str:
    """The message of a run stopped by non-finite values."""
    start = (
        f"Training diverged: non-finite losses or gradients from step "
        f"{state.trouble_start} on ({state.nonfinite} non-finite steps in all)."
    )
    if resume_from is None:
        return (
            f"{start} No checkpoint was written before that. Start again with a lower "
            "optim.lr or with controllers.clip_norm."
        )
    return (
        f"{start} The checkpoints written since then are set aside as *.pt.diverged; "
        f"`rnnzoo train --resume {folder} optim.lr=...` goes on from step {resume_from}, "
        "the last one trained on finite values."
    )
