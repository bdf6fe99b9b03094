"""Training progress: everything a checkpoint holds so that a resumed run continues
bit for bit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnzoo import checkpoint
from rnnzoo.cell import State
from rnnzoo.errors import CheckpointError, TrainingError
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
    last_eval: dict[str, float] = field(default_factory=dict)

    _COUNTERS = ("window_steps", "window_loss", "window_clipped", "nonfinite", "nonfinite_run")

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "carried": [list(s) for s in self.carried] if self.carried is not None else None,
            "counters": {k: getattr(self, k) for k in self._COUNTERS},
            "last_train_loss": self.last_train_loss,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "last_eval": dict(self.last_eval),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], device: torch.device) -> TrainState:
        carried = state.get("carried")
        counters = state.get("counters", {})
        return cls(
            step=int(state["step"]),
            carried=[tuple(t.to(device) for t in s) for s in carried] if carried else None,
            **{k: type(getattr(cls, k))(counters[k]) for k in cls._COUNTERS if k in counters},
            last_train_loss=float(state.get("last_train_loss", float("nan"))),
            best=state.get("best"),
            bad_evals=int(state.get("bad_evals", 0)),
            last_eval=dict(state.get("last_eval", {})),
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
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> TrainState:
    """Load the checkpoint at ``path`` into ``model``, ``optimizer`` and the RNGs."""
    saved = checkpoint.load(path)
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise CheckpointError(misfit(path, exc)) from exc
    set_rng_state(saved["rng"], device)
    return TrainState.from_dict(saved, device)
