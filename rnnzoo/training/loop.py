"""The training loop. :class:`Trainer` puts the chosen plugins together and
:meth:`Trainer.fit` runs one training step after another, top to bottom:

    micro-batches -> forward + backward (truncated-BPTT windows) -> controllers
    shape the gradients -> optimizer step -> evaluate, log, checkpoint when due

It knows nothing about cells, clipping, tags or gradient-flow probes: those are
plugins, called at the fixed points documented in :mod:`rnnzoo.hookspecs`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rnnzoo import checkpoint
from rnnzoo.config import to_yaml
from rnnzoo.registry import Registry
from rnnzoo.task import Batch
from rnnzoo.tracking import Tracker
from rnnzoo.training import distributed, outcome, settings
from rnnzoo.training import evaluate as ev
from rnnzoo.training import step as steps
from rnnzoo.training.assemble import assemble
from rnnzoo.training.context import RunView
from rnnzoo.training.device import autocast
from rnnzoo.training.optim import lr_at, set_lr
from rnnzoo.training.progress import Progress, notices, say
from rnnzoo.training.run import RunFolder
from rnnzoo.training.signals import StopRequest
from rnnzoo.training.state import checkpoint_state


class Trainer:
    """Trains one experiment in one run folder, new (it must not hold anything
    yet) or resumed from its latest checkpoint; :meth:`fit` runs it to the end."""

    def __init__(
        self,
        cfg: DictConfig,
        registry: Registry,
        run_dir: Path,
        resume: bool = False,
        run_id: str | None = None,
    ) -> None:
        self.cfg, self.settings = settings.frozen(cfg), settings.snapshot(cfg)
        self.hook = registry.pm.hook
        self.tracker: Tracker | None = None
        self.ranks = distributed.join(cfg)
        # data-parallel: rank 0's folder and run id are everyone's
        run_dir, run_id = distributed.same_everywhere(self.ranks, (run_dir, run_id))
        self.folder, self.resumed = RunFolder(run_dir), resume
        # a resumed run is locked before anything of it is read; a new one when it
        # starts; only rank 0 writes the folder
        if self.ranks.main:
            self.folder.claim(new=False) if resume else self.folder.check_new()
        try:
            parts = assemble(cfg, registry, self.folder, resume, run_id, self.ranks)
        except BaseException:
            self.close()
            raise
        self.device, self.task, self.model = parts.device, parts.task, parts.model
        self.ddp, self.controllers, self.optimizer = parts.ddp, parts.controllers, parts.optimizer
        self.state, self.run_id, self.tags = parts.state, parts.run_id, parts.tags
        self.folder.sources = parts.sources
        self.amp = partial(autocast, self.device, cfg.trainer.precision)
        self.stop = StopRequest()
        self.view = RunView(self)

    @property
    def run_dir(self) -> Path:
        return self.folder.path

    def batches(self, step: int) -> Iterator[Batch]:
        """The micro-batches of ``step``: a pure function of the step."""
        t = self.settings.trainer
        for micro in range(t.grad_accum):
            yield self.task.train_batch(step * t.grad_accum + micro, t.batch_size).to(self.device)

    def fit(self) -> dict[str, Any]:
        """Train to ``trainer.steps`` (or early stop, or divergence); return the
        summary, whose ``status`` says how it ended. On SIGINT/SIGTERM the step in
        flight finishes, a checkpoint is written and ``KeyboardInterrupt`` raised;
        ``rnnzoo train --resume`` then goes on as if nothing had happened."""
        cfg, t, s = self.cfg, self.settings.trainer, self.state
        per_token = self.task.spec.per_token
        if self.resumed and (reason := outcome.nothing_to_do(cfg, self.task, s, str(self.run_dir))):
            say(reason)
            self.close()
            return self.folder.read_summary() or outcome.summary(cfg, self.task, s, 0.0)
        started, spent = time.perf_counter(), s.elapsed
        stop = False
        try:
            ev.preflight(self.model, self.task, cfg, self.device, self.amp)
            self._open()
            self.model.train()
            self.hook.rnnzoo_train_start(run=self.view)
            self.progress = Progress(t.steps, s.step, t.progress and self.ranks.main)
            if s.pending is not None:  # a resumed run whose last evaluation failed
                pending, s.pending = s.pending, None
                stop = self._when_due(pending, stop)
            with self.stop.deferred():
                while s.step < t.steps and not stop and not self.stop.now:
                    lr = lr_at(s.step, self.settings.optim, t.steps)
                    set_lr(self.optimizer, lr)

                    # forward and backward every micro-batch; gradients add up (and
                    # are averaged over data-parallel ranks by the last backward)
                    loss_sum, items, tokens = 0.0, 0, 0
                    for micro, batch in enumerate(self.batches(s.step)):
                        last = micro == t.grad_accum - 1
                        loss_sum += self.forward_backward(batch, t.grad_accum, sync=last)
                        items += steps.loss_items(batch, per_token)
                        tokens += batch.num_tokens()
                    self.progress.tokens += tokens
                    s.elapsed, s.tokens = spent + time.perf_counter() - started, s.tokens + tokens
                    loss_sum, asked, spent_up = distributed.sum_all(
                        self.ranks,
                        [loss_sum, float(self.stop.requested), float(s.over_budget(t))],
                        self.device,
                    )
                    if self.ranks.active:  # every rank stops after the same step
                        self.stop.agreed = asked > 0
                    loss = loss_sum / max(items, 1)
                    self.hook.rnnzoo_after_backward(run=self.view, step=s.step)

                    # controllers shape the gradients, the optimizer steps
                    metrics: dict[str, float] = {"train/loss": loss, "train/lr": lr}
                    stop = self.optimizer_step(loss, metrics)
                    if spent_up > 0 and not stop:  # trainer.max_time or max_tokens
                        stop, s.stopped = True, "budget"
                    self.optimizer.zero_grad(set_to_none=True)
                    s.step += 1
                    s.window_steps += 1
                    s.window_loss += loss
                    self.hook.rnnzoo_step_end(run=self.view, step=s.step, metrics=metrics)

                    # evaluate, log and checkpoint when due
                    self.progress.step_done()
                    stop = self._when_due(metrics, stop)
        except BaseException as exc:  # an error, or a second signal: the last checkpoint stays
            self.close()
            if self.ranks.active and distributed.is_comm_error(exc):  # a process of the group
                raise distributed.lost_contact(self.ranks, exc) from exc  # died or timed out
            raise
        if self.stop.now and not stop and s.step < t.steps:
            say(f"stopped at step {s.step}; continue: rnnzoo train --resume {self.run_dir}")
            try:
                self.hook.rnnzoo_train_interrupted(run=self.view)
            finally:
                self.close()
            raise KeyboardInterrupt
        if s.last_eval.get("step") != s.step:
            self._evaluate()
        if s.stopped != "nonfinite":
            self.save_checkpoint()
            if s.best_step == s.step:
                self.save_checkpoint(best=True)
        elif self.ranks.main:  # keep the last checkpoint trained on finite values
            say(outcome.set_aside_diverged(s, self.run_dir))
        summary = outcome.summary(cfg, self.task, s, time.perf_counter() - started)
        if self.tracker is not None:
            self.tracker.summary(summary)
        self.hook.rnnzoo_train_end(run=self.view, summary=summary)
        self.close()
        return summary

    # -- the parts of a step ----------------------------------------------------------

    def forward_backward(self, batch: Batch, scale: float = 1.0, sync: bool = True) -> float:
        """Forward and backward this rank's share of one (micro-)batch, gradients
        summed into ``.grad``; returns its summed loss. A stream task starts from
        the state carried over from the previous batch and leaves its final state
        for the next one. ``sync``: this is the step's last micro-batch."""
        stream = self.task.spec.stream
        carried = self.state.carried if stream else None
        items = steps.loss_items(batch, self.task.spec.per_token)
        loss, final = steps.forward_backward(
            self.model, self.ranks.shard(batch), self.controllers, carried, scale, self.amp,
            items, self.ddp, sync,
        )  # fmt: skip
        self.state.carried = final if stream else None
        return loss

    def optimizer_step(self, loss: float, metrics: dict[str, float]) -> bool:
        """Let the controllers shape the gradients and take the optimizer step, or
        skip the step when the loss or a gradient is not finite
        (``trainer.on_nonfinite``). Returns True when training must stop."""
        s, t = self.state, self.settings.trainer
        norm = steps.grad_norm(self.model)
        what = steps.nonfinite_name(self.model, loss, norm)
        if what is not None:
            return steps.skip_nonfinite(s, what, t)
        s.nonfinite_run = 0
        metrics["grad/norm_preclip"] = norm
        s.window_clipped += steps.shape_gradients(self.model, self.controllers, metrics)
        self.hook.rnnzoo_before_optimizer_step(run=self.view, step=s.step)
        self.optimizer.step()
        return False

    # -- what fit() does when due --------------------------------------------------

    def _when_due(self, metrics: dict[str, float], stop: bool) -> bool:
        """After step ``state.step``: evaluate, log and checkpoint when due. If the
        evaluation fails, the step's training is saved first (with ``metrics`` as
        pending work, done first on resume). Returns True when training must stop."""
        t, s = self.settings.trainer, self.state
        last = s.step == t.steps
        if s.step % t.eval_every == 0 or last or stop:
            try:
                stop = self._evaluate() or stop
            except Exception:
                self._save_pending(metrics)
                raise
        if s.step % t.log_every == 0 or last or stop:
            self._log_window(metrics)
        due = s.step % t.checkpoint_every == 0 or self.stop.now
        if due and not (last or stop):
            self.save_checkpoint()
        if s.best_step == s.step and not (last or stop):  # keep a new best's weights
            self.save_checkpoint(best=True)
        return stop

    def _evaluate(self) -> bool:
        """Evaluate and log; True when early stopping says stop."""
        t, s = self.cfg.trainer, self.state
        metrics = ev.evaluate(
            self.model, self.task, t.batch_size, self.device, t.eval_batches, self.amp, self.ranks
        )
        stop = ev.track_best(self.state, metrics, self.cfg, self.task)
        if self.tracker is not None:
            self.tracker.log(s.step, metrics)
        s.last_eval = {**metrics, "step": float(s.step)}
        self.hook.rnnzoo_eval_end(run=self.view, step=s.step, metrics=metrics)
        return stop

    def _log_window(self, metrics: dict[str, float]) -> None:
        """Log one ``train/*`` row (see :meth:`TrainState.close_window`)."""
        row = self.state.close_window(metrics, self.progress.tokens_per_s())
        if self.tracker is not None:
            self.tracker.log(self.state.step, row)
        self.progress.show(row["train/loss"], row["perf/tokens_per_s"])

    # -- the run folder and checkpoints ---------------------------------------------

    def _open(self) -> None:
        """Claim the run folder, write its files and start tracking (JSONL, W&B);
        rank 0's job alone."""
        if not self.ranks.main:
            return
        if not self.folder.lock.held:
            self.folder.claim(new=True)
        resumed_at = self.state.step if self.resumed else None
        self.folder.prepare(self.cfg, self.task, self.run_id, resumed_at)
        say(f"run folder {self.run_dir}" + (f" (resumed at step {resumed_at})" * self.resumed))
        for line in notices(self.cfg, self.device):
            say(line)
        self.tracker = self.folder.tracker(self.cfg, self.run_id, self.tags, self.task)

    def save_checkpoint(self, best: bool = False) -> None:
        """Rank 0 writes the checkpoint (``best``: ``best.pt``, of the best main
        metric so far); the carried state is every rank's rows."""
        s, t = self.state, self.cfg.trainer
        carried, s.carried = s.carried, distributed.gather_rows(self.ranks, s.carried)
        try:
            state = checkpoint_state(s, self.model, self.optimizer, self.device)
        finally:
            s.carried = carried
        if not self.ranks.main:
            return
        state.update(config=to_yaml(self.cfg), run_id=self.run_id)
        if best:
            checkpoint.save_best(self.run_dir, state)
            return
        keep_before = s.safe_before(t.checkpoint_every)
        self.folder.save_checkpoint(s.step, state, t.keep_checkpoints, keep_before, self.tracker)

    def _save_pending(self, metrics: dict[str, float]) -> None:  # best effort
        self.state.pending = metrics
        with contextlib.suppress(Exception):  # the evaluation's error is the one to report
            self.save_checkpoint()
        self.state.pending = None

    def close(self) -> None:
        """Finish tracking, close the progress bar, release the folder, drop the view."""
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
        if hasattr(self, "progress"):
            self.progress.close()
        self.folder.release()
        distributed.leave(self.ranks)
        vars(self).pop("view", None)  # it refers back: plugins' run state goes with us
