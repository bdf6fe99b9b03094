"""Training progress: everything a checkpoint holds so that a resumed run continues
bit for bit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnzoo import checkpoint
from rnnzoo.cell import State
from rnnzoo.errors import CheckpointError, ConfigError, TrainingError
from rnnzoo.training.run import misfit


@dataclass
class TrainState:
    """The progress of a run; :func:`checkpoint_state` saves it with the weights."""

    #: optimizer steps taken
    step: int = 0
    #: stream tasks: the detached state carried from one batch into the next
    carried: list[State] | None = None
    #: the current logging window (since the last ``train/*`` row)
    window_steps: int = 0
    window_loss: float = 0.0
    window_clipped: float = 0.0
    #: non-finite steps in all, and in a row
    nonfinite: int = 0
    nonfinite_run: int = 0
    last_train_loss: float = float("nan")
    #: the best value of the main metric, and evaluations since it improved
    best: float | None = None
    bad_evals: int = 0
    #: the step of that best value (None while it is not finite)
    best_step: int | None = None
    last_eval: dict[str, float] = field(default_factory=dict)
    #: why training stopped before ``trainer.steps``: "early_stop", "nonfinite" or
    #: "budget" (``trainer.max_time`` or ``trainer.max_tokens`` reached)
    stopped: str | None = None
    #: training so far, over all resumes: seconds of the training loop, and tokens
    elapsed: float = 0.0
    tokens: int = 0
    #: the first non-finite step of the current stretch of trouble, and the latest
    #: (a stretch ends after ``checkpoint_every`` finite steps in a row)
    trouble_start: int | None = None
    last_nonfinite: int | None = None
    #: a step's metrics whose evaluation and logging are still to do (an
    #: evaluation failed after the step was trained; a resumed run does them first)
    pending: dict[str, float] | None = None

    _COUNTERS = ("window_steps", "window_loss", "window_clipped", "nonfinite", "nonfinite_run")

    def note_nonfinite(self, step: int, checkpoint_every: int) -> None:
        """Count a non-finite ``step``; it starts a new stretch of trouble unless the
        previous one came less than a checkpoint interval before."""
        self.nonfinite += 1
        self.nonfinite_run += 1
        if self.last_nonfinite is None or step - self.last_nonfinite > checkpoint_every:
            self.trouble_start = step
        self.last_nonfinite = step

    def over_budget(self, t: Any) -> bool:
        """Whether ``trainer.max_time`` or ``trainer.max_tokens`` is used up."""
        time_up = t.max_time is not None and self.elapsed >= t.max_time
        return time_up or (t.max_tokens is not None and self.tokens >= t.max_tokens)

    def close_window(self, metrics: dict[str, float], tokens_per_s: float) -> dict[str, float]:
        """The ``train/*`` row of the logging window that ends now: the latest step's
        ``metrics``, with the loss and clip rate averaged over the window's steps."""
        n = max(self.window_steps, 1)
        self.last_train_loss = self.window_loss / n
        row = {
            **metrics,
            "train/loss": self.last_train_loss,
            "clip/rate": self.window_clipped / n,
            "train/nonfinite_steps": self.nonfinite,
            "perf/tokens_per_s": tokens_per_s,
        }
        self.window_steps, self.window_loss, self.window_clipped = 0, 0.0, 0.0
        return row

    def safe_before(self, checkpoint_every: int) -> int | None:
        """While trouble lasts, the step before which checkpoints were written from
        finite training (the one to keep, and to go back to if training diverges)."""
        if self.last_nonfinite is None or self.step - self.last_nonfinite > checkpoint_every:
            return None
        return self.trouble_start

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "carried": [list(s) for s in self.carried] if self.carried is not None else None,
            "counters": {k: getattr(self, k) for k in self._COUNTERS},
            "last_train_loss": self.last_train_loss,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "best_step": self.best_step,
            "last_eval": dict(self.last_eval),
            "stopped": self.stopped,
            "budget": [self.elapsed, self.tokens],
            "trouble": [self.trouble_start, self.last_nonfinite],
            "pending": self.pending,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], device: torch.device) -> TrainState:
        carried = state.get("carried")
        counters = state.get("counters", {})
        trouble = state.get("trouble") or [None, None]
        budget = state.get("budget") or [0.0, 0]
        return cls(
            step=int(state["step"]),
            carried=[tuple(t.to(device) for t in s) for s in carried] if carried else None,
            **{k: type(getattr(cls, k))(counters[k]) for k in cls._COUNTERS if k in counters},
            last_train_loss=float(state.get("last_train_loss", float("nan"))),
            best=state.get("best"),
            bad_evals=int(state.get("bad_evals", 0)),
            best_step=state.get("best_step"),
            last_eval=dict(state.get("last_eval", {})),
            stopped=state.get("stopped"),
            elapsed=float(budget[0]),
            tokens=int(budget[1]),
            trouble_start=trouble[0],
            last_nonfinite=trouble[1],
            pending=state.get("pending"),
        )


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    rng = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def set_rng_state(rng: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


def checkpoint_state(
    state: TrainState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
) -> dict[str, Any]:
    """What a checkpoint holds: progress, weights, optimizer state and RNG states.
    Weights that are not finite are refused (the previous checkpoint stays the one
    to resume from)."""
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise TrainingError(
            f"Refusing to write a checkpoint at step {state.step}: parameter '{bad[0]}' "
            "is not finite. The previous checkpoint is intact; lower the learning "
            "rate or add controllers.clip_norm and resume from it."
        )
    return {
        **state.state_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng_state(device),
    }


def restore_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    run_id: str | None,
) -> TrainState:
    """Load the checkpoint at ``path`` of run ``run_id`` into ``model``,
    ``optimizer`` and the RNGs; a checkpoint of another run, or one whose progress
    entries are missing or of the wrong type, is refused in one sentence."""
    saved = checkpoint.load(path)
    if run_id is not None and saved.get("run_id", run_id) != run_id:
        raise CheckpointError(
            f"Checkpoint '{path}' belongs to run {saved['run_id']}, not to the run "
            f"{run_id} of this folder (run.json); it was copied in from elsewhere. Remove "
            "it to resume from this run's own checkpoints."
        )
    _check_progress(path, saved)
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(same_implementation(saved["optimizer"], optimizer))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(misfit(path, exc)) from exc
    set_rng_state(saved["rng"], device)
    return TrainState.from_dict(saved, device)


def same_implementation(saved: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``saved`` (an optimizer's state dict) with each group's ``fused`` and
    ``foreach`` taken from ``optimizer``: how the update runs is this process's
    choice (a checkpoint from before the fused kernels, or from a device that has
    them, must not switch them off or on), and loading with it puts the ``step``
    counters where that implementation wants them."""
    groups = []
    for group, now in zip(saved["param_groups"], optimizer.param_groups, strict=False):
        groups.append({**group, **{k: now[k] for k in ("fused", "foreach") if k in now}})
    return {**saved, "param_groups": groups}


def _check_progress(path: Path, saved: dict[str, Any]) -> None:
    """The entries a resume reads besides the weights, with the types it needs."""
    rng = saved.get("rng")
    problems = []
    if (
        not isinstance(saved.get("step"), int)
        or isinstance(saved["step"], bool)
        or saved["step"] < 0
    ):
        problems.append(f"'step' is {saved.get('step')!r}, not a whole number >= 0")
    if not (isinstance(rng, dict) and isinstance(rng.get("torch"), torch.Tensor)):
        problems.append("'rng' does not hold the random-number state ('torch' tensor)")
    elif rng["torch"].dtype != torch.uint8:
        problems.append("'rng' holds a tensor that is no random-number state")
    best = saved.get("best")
    if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
        problems.append(f"'best' is {best!r}, not a number")
    if not isinstance(saved.get("optimizer"), dict):
        problems.append("'optimizer' is missing")
    if problems:
        raise CheckpointError(
            f"Checkpoint '{path}' is damaged: {'; '.join(problems)}. rnnzoo writes these "
            "entries itself, so the file was changed or made elsewhere; delete it to "
            "resume from the previous checkpoint in the same folder."
        )


def check_carried(state: TrainState, batch_size: int, run_dir: Path) -> None:
    """A stream task's carried state must fit the (possibly overridden) batch size."""
    if state.carried and state.carried[0][0].shape[0] != batch_size:
        lanes = state.carried[0][0].shape[0]
        raise ConfigError(
            f"The run in '{run_dir}' carries the state of {lanes} parallel streams from "
            f"batch to batch, so trainer.batch_size cannot change to {batch_size} on "
            f"resume. Resume with trainer.batch_size={lanes}, or start a new run."
        )
