"""The training loop. :class:`Trainer` puts the chosen plugins together and
:meth:`Trainer.fit` runs one training step after another, top to bottom:

    micro-batches -> forward + backward (truncated-BPTT windows) -> controllers
    shape the gradients -> optimizer step -> evaluate, log, checkpoint when due

It knows nothing about cells, clipping or tags: those are plugins, called at the
fixed points documented in :mod:`rnnzoo.hookspecs`. The gradient-flow probes are a
plugin on those same event hooks.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from rnnzoo.build import build_controllers, build_experiment_model, build_task, plugin_tags
from rnnzoo.config import to_yaml
from rnnzoo.controller import plans_windows
from rnnzoo.errors import ConfigError
from rnnzoo.registry import Registry
from rnnzoo.task import Batch
from rnnzoo.tracking import Tracker
from rnnzoo.training import evaluate as ev
from rnnzoo.training.context import RunView
from rnnzoo.training.device import autocast, resolve_device
from rnnzoo.training.optim import lr_at, make_optimizer, set_lr
from rnnzoo.training.run import RunFolder
from rnnzoo.training.signals import StopRequest
from rnnzoo.training.state import TrainState, checkpoint_state, restore_checkpoint
from rnnzoo.training.step import (
    forward_backward,
    grad_norm,
    loss_items,
    nonfinite_name,
    nonfinite_policy,
    shape_gradients,
)


class Trainer:
    """Trains one experiment in one run folder; :meth:`fit` runs it to the end."""

    def __init__(
        self, cfg: DictConfig, registry: Registry, run_dir: Path, resume: bool = False
    ) -> None:
        self.cfg = cfg
        self.hook = registry.pm.hook
        self.folder = RunFolder(run_dir)
        self.device = resolve_device(cfg.trainer.device)
        if cfg.trainer.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.trainer.seed)

        self.task = build_task(cfg, registry)
        if resume:
            self.task.load(run_dir)
        self.model = build_experiment_model(cfg, self.task, registry).to(self.device)
        self.controllers = build_controllers(cfg, registry)
        if self.model.recurrence.directions == 2 and any(
            plans_windows(c) for _, c in self.controllers
        ):
            raise ConfigError(
                "Truncated BPTT cannot train a bidirectional model: the backward "
                "direction needs the whole sequence. Remove 'controllers.tbptt' or use a "
                "one-directional head."
            )
        self.optimizer = make_optimizer(self.model.parameters(), cfg.optim)
        self.amp = partial(autocast, self.device, cfg.trainer.precision)
        self.tags = plugin_tags(cfg, registry)
        self.state = TrainState()
        self.run_id = (self.folder.read_run_id() if resume else None) or os.urandom(4).hex()
        if resume:
            self._restore(self.folder.latest_checkpoint())
        self.tracker: Tracker | None = None
        self.stop = StopRequest()
        self.view = RunView(self)

    @property
    def run_dir(self) -> Path:
        return self.folder.path

    def batches(self, step: int) -> Iterator[Batch]:
        """The micro-batches of ``step``: a pure function of the step."""
        t = self.cfg.trainer
        for micro in range(t.grad_accum):
            yield self.task.train_batch(step * t.grad_accum + micro, t.batch_size).to(self.device)

    def fit(self) -> dict[str, float]:
        """Train to ``trainer.steps`` (or early stop); return the summary.

        On SIGINT/SIGTERM the step in flight finishes, a checkpoint is written and
        ``KeyboardInterrupt`` is raised; ``rnnzoo train --resume`` continues from it
        exactly as if nothing had happened.
        """
        cfg, t, s = self.cfg, self.cfg.trainer, self.state
        per_token = self.task.spec.per_token
        self._open()
        self.model.train()
        self.hook.rnnzoo_train_start(run=self.view)
        bar = tqdm(
            total=t.steps, initial=s.step, disable=not t.progress, dynamic_ncols=True,
            unit="step", file=sys.stderr,
        )  # fmt: skip
        started = window_start = time.perf_counter()
        window_tokens = 0
        stop = False
        try:
            with self.stop.deferred():
                while s.step < t.steps and not stop and not self.stop.requested:
                    lr = lr_at(s.step, cfg.optim, t.steps)
                    set_lr(self.optimizer, lr)

                    # forward and backward every micro-batch; gradients add up
                    loss_sum, items = 0.0, 0
                    for batch in self.batches(s.step):
                        loss_sum += self.forward_backward(batch, t.grad_accum)
                        items += loss_items(batch, per_token)
                        window_tokens += batch.num_tokens()
                    loss = loss_sum / max(items, 1)
                    self.hook.rnnzoo_after_backward(run=self.view, step=s.step)

                    # controllers shape the gradients, the optimizer steps
                    metrics: dict[str, float] = {"train/loss": loss, "train/lr": lr}
                    stop = self.optimizer_step(loss, metrics)
                    self.optimizer.zero_grad(set_to_none=True)
                    s.step += 1
                    s.window_steps += 1
                    s.window_loss += loss
                    self.hook.rnnzoo_step_end(run=self.view, step=s.step, metrics=metrics)

                    # evaluate, log and checkpoint when due
                    last = s.step == t.steps
                    if s.step % t.eval_every == 0 or last or stop:
                        stop = self._evaluate() or stop
                    if s.step % t.log_every == 0 or last or stop:
                        now = time.perf_counter()
                        row = self._log_window(metrics, now - window_start, window_tokens)
                        window_start, window_tokens = now, 0
                        bar.set_postfix(
                            loss=f"{row['train/loss']:.4f}",
                            tok_s=f"{row['perf/tokens_per_s']:.0f}",
                            refresh=False,
                        )
                    due = s.step % t.checkpoint_every == 0 or self.stop.requested
                    if due and not (last or stop):
                        self.save_checkpoint()
                    bar.update(1)
        except BaseException:  # an error, or a second signal: the last checkpoint stays
            bar.close()
            self.close()
            raise
        bar.close()
        if self.stop.requested and not stop and s.step < t.steps:
            tqdm.write(
                f"rnnzoo: stopped at step {s.step} with a checkpoint; continue with "
                f"`rnnzoo train --resume {self.run_dir}`",
                file=sys.stderr,
            )
            self.close()
            raise KeyboardInterrupt
        if s.last_eval.get("step") != s.step:
            self._evaluate()
        self.save_checkpoint()
        summary = self._summary(time.perf_counter() - started)
        if self.tracker is not None:
            self.tracker.summary(summary)
        self.hook.rnnzoo_train_end(run=self.view, summary=summary)
        self.close()
        return summary

    # -- the parts of a step ----------------------------------------------------------

    def forward_backward(self, batch: Batch, scale: float = 1.0) -> float:
        """Forward and backward one (micro-)batch, gradients summed into ``.grad``;
        returns the summed loss. A stream task starts from the state carried over
        from the previous batch and leaves its final state for the next one."""
        stream = self.task.spec.stream
        carried = self.state.carried if stream else None
        loss, final = forward_backward(
            self.model, batch, self.controllers, carried, scale, self.amp
        )
        self.state.carried = final if stream else None
        return loss

    def optimizer_step(self, loss: float, metrics: dict[str, float]) -> bool:
        """Let the controllers shape the gradients and take the optimizer step, or
        skip the step when the loss or a gradient is not finite
        (``trainer.on_nonfinite``). Returns True when training must stop."""
        s, t = self.state, self.cfg.trainer
        norm = grad_norm(self.model)
        what = nonfinite_name(self.model, loss, norm)
        if what is not None:
            s.nonfinite += 1
            s.nonfinite_run += 1
            return nonfinite_policy(
                t.on_nonfinite, what, s.step + 1, s.nonfinite_run, t.max_nonfinite
            )
        s.nonfinite_run = 0
        metrics["grad/norm_preclip"] = norm
        s.window_clipped += shape_gradients(self.model, self.controllers, metrics)
        self.hook.rnnzoo_before_optimizer_step(run=self.view, step=s.step)
        self.optimizer.step()
        return False

    # -- what fit() does when due --------------------------------------------------

    def _evaluate(self) -> bool:
        """Evaluate and log; True when early stopping says stop."""
        t, s = self.cfg.trainer, self.state
        metrics = ev.evaluate(
            self.model, self.task, t.batch_size, self.device, t.eval_batches, self.amp
        )
        stop = self.track_best(metrics)
        if self.tracker is not None:
            self.tracker.log(s.step, metrics)
        s.last_eval = {**metrics, "step": float(s.step)}
        self.hook.rnnzoo_eval_end(run=self.view, step=s.step, metrics=metrics)
        return stop

    def track_best(self, metrics: dict[str, float]) -> bool:
        """Follow the main metric's best value; True when early stopping says stop
        (``trainer.early_stop_patience`` evaluations without improvement)."""
        s, patience = self.state, self.cfg.trainer.early_stop_patience
        key, mode = ev.main_metric(self.cfg, self.task)
        value = ev.check_metric(key, metrics)
        if ev.is_better(value, s.best, mode):
            s.best, s.bad_evals = value, 0
        else:
            s.bad_evals += 1
        return patience > 0 and s.bad_evals >= patience

    def _log_window(self, metrics: dict[str, float], elapsed: float, tokens: int) -> dict:
        """Log one ``train/*`` row: the latest step's values, with the loss and the
        clip rate averaged over the steps since the previous row."""
        s = self.state
        n = max(s.window_steps, 1)
        s.last_train_loss = s.window_loss / n
        row = {
            **metrics,
            "train/loss": s.last_train_loss,
            "clip/rate": s.window_clipped / n,
            "train/nonfinite_steps": s.nonfinite,
            "perf/tokens_per_s": tokens / max(elapsed, 1e-9),
        }
        s.window_steps, s.window_loss, s.window_clipped = 0, 0.0, 0.0
        if self.tracker is not None:
            self.tracker.log(s.step, row)
        return row

    def _summary(self, wall: float) -> dict[str, float]:
        s = self.state
        key, _ = ev.main_metric(self.cfg, self.task)
        summary: dict[str, float] = {
            "step": float(s.step),
            "train/loss": s.last_train_loss,
            **{k: v for k, v in s.last_eval.items() if k != "step"},
            "train/nonfinite_steps": float(s.nonfinite),
            "time/wall_s": wall,
        }
        if s.best is not None:
            summary[f"best/{key}"] = s.best
        summary.update({f"baseline/{k}": v for k, v in self.task.baseline().items()})
        return summary

    # -- the run folder and checkpoints ---------------------------------------------

    def _open(self) -> None:
        """Write the run folder's files and start tracking (JSONL, W&B)."""
        resumed_at = self.state.step if self.state.step > 0 else None
        self.folder.prepare(self.cfg, self.task, self.run_id, resumed_at)
        if self.cfg.trainer.precision == "bf16" and self.device.type != "cuda":
            tqdm.write(
                "rnnzoo: trainer.precision=bf16 needs CUDA; training in fp32", file=sys.stderr
            )
        self.tracker = self.folder.tracker(self.cfg, self.run_id, self.tags)

    def save_checkpoint(self) -> None:
        state = checkpoint_state(self.state, self.model, self.optimizer, self.device)
        state["config"] = to_yaml(self.cfg)
        self.folder.save_checkpoint(self.state.step, state, self.cfg.trainer.keep_checkpoints)

    def _restore(self, path: Path) -> None:
        self.state = restore_checkpoint(path, self.model, self.optimizer, self.device)

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
