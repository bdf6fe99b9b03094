"""The one generic trainer. It knows nothing about cells, clipping or tags: it
calls the task, the model and the gradient controllers at fixed points."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm import tqdm

from rnnzoo import checkpoint, gradflow, plots
from rnnzoo.build import build_controllers, build_experiment_model, build_task, plugin_tags
from rnnzoo.cell import State
from rnnzoo.config import flatten, to_yaml
from rnnzoo.controller import GradController, global_norm, plans_windows
from rnnzoo.errors import CheckpointError, ConfigError, TrainingError
from rnnzoo.registry import Registry
from rnnzoo.task import Batch
from rnnzoo.tracking import Tracker, truncate_jsonl, write_json

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("constant", "linear", "cosine")
#: metrics that are better when larger (early stopping and ``best/*``)
HIGHER_IS_BETTER = ("acc", "accuracy", "f1")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when it is there, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"'trainer.device' is '{name}': {exc}. Use auto, cpu or cuda.") from exc
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"'trainer.device' is '{name}'; rnnzoo trains on auto, cpu or cuda.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"'trainer.device' is '{name}' but no CUDA device is available. Use "
            "trainer.device=auto or cpu."
        )
    return device


def lr_at(step: int, cfg: DictConfig, total_steps: int) -> float:
    """The learning rate of (0-based) ``step``: linear warmup from ``lr / warmup``
    to ``lr`` over ``warmup_steps``, then constant, or a linear or cosine decay
    that reaches ``lr * min_lr_ratio`` at ``total_steps``."""
    base = cfg.lr
    if step < cfg.warmup_steps:
        return base * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return base
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    progress = min(progress, 1.0)
    floor = base * cfg.min_lr_ratio
    if cfg.schedule == "linear":
        return floor + (base - floor) * (1 - progress)
    if cfg.schedule == "cosine":
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ConfigError(f"'optim.schedule' is '{cfg.schedule}'; choose {', '.join(SCHEDULES)}.")


def make_optimizer(params: Any, cfg: DictConfig) -> torch.optim.Optimizer:
    """``optim.name`` with its settings; ``momentum`` applies to sgd and rmsprop."""
    common = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.name == "sgd":
        return torch.optim.SGD(params, momentum=cfg.momentum, **common)
    if cfg.name == "adam":
        return torch.optim.Adam(params, betas=(cfg.beta1, cfg.beta2), **common)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, betas=(cfg.beta1, cfg.beta2), **common)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, momentum=cfg.momentum, **common)
    raise ConfigError(
        f"Unknown optimizer '{cfg.name}' at 'optim.name'; choose one of {', '.join(OPTIMIZERS)}."
    )


def detach_state(state: list[State] | None) -> list[State] | None:
    return None if state is None else [tuple(t.detach() for t in s) for s in state]


def _check_config(cfg: DictConfig) -> None:
    """Reject impossible trainer and optimizer settings before anything is written."""
    t, o = cfg.trainer, cfg.optim
    positive = ("steps", "batch_size", "grad_accum", "log_every", "eval_every", "checkpoint_every")
    for key in (*positive, "max_nonfinite"):
        if t[key] < 1:
            raise ConfigError(f"'trainer.{key}' must be at least 1, got {t[key]}.")
    if t.eval_batches is not None and t.eval_batches < 1:
        raise ConfigError(
            f"'trainer.eval_batches' must be at least 1 or null, got {t.eval_batches}."
        )
    if t.keep_checkpoints < 1:
        raise ConfigError(
            f"'trainer.keep_checkpoints' must be at least 1, got {t.keep_checkpoints}."
        )
    if t.on_nonfinite not in ("skip", "stop", "raise"):
        raise ConfigError(
            f"'trainer.on_nonfinite' is '{t.on_nonfinite}'; choose skip, stop or raise."
        )
    if t.precision not in ("fp32", "bf16"):
        raise ConfigError(f"'trainer.precision' is '{t.precision}'; choose fp32 or bf16.")
    if o.name not in OPTIMIZERS:
        raise ConfigError(
            f"Unknown optimizer '{o.name}' at 'optim.name'; choose one of {', '.join(OPTIMIZERS)}."
        )
    if o.schedule not in SCHEDULES:
        raise ConfigError(f"'optim.schedule' is '{o.schedule}'; choose {', '.join(SCHEDULES)}.")
    if not 0 < o.lr <= torch.finfo(torch.float32).max:  # NaN and inf fail too
        raise ConfigError(f"'optim.lr' must be positive and finite, got {o.lr}.")
    if not (0 <= o.beta1 < 1 and 0 <= o.beta2 < 1 and o.weight_decay >= 0 and o.momentum >= 0):
        raise ConfigError(
            "'optim.beta1' and 'optim.beta2' must be in [0, 1), 'optim.weight_decay' and "
            f"'optim.momentum' at least 0; got {o.beta1}, {o.beta2}, {o.weight_decay} and "
            f"{o.momentum}."
        )
    if o.warmup_steps < 0 or not 0.0 <= o.min_lr_ratio <= 1.0:
        raise ConfigError(
            "'optim.warmup_steps' must be >= 0 and 'optim.min_lr_ratio' in [0, 1], got "
            f"{o.warmup_steps} and {o.min_lr_ratio}."
        )
    if cfg.gradflow.every < 0 or cfg.gradflow.batch_size < 1:
        raise ConfigError("'gradflow.every' must be >= 0 and 'gradflow.batch_size' >= 1.")


class Trainer:
    """Trains one experiment in one run folder; ``fit()`` runs it to the end.

    One training step: controllers plan truncated-BPTT windows, forward, head loss,
    backward (micro-batch by micro-batch for gradient accumulation), controllers
    shape the gradients, optimizer step; then, when due, evaluation, logging, a
    gradient-flow probe and a checkpoint.

    Only rank 0 (``RANK`` unset or 0) writes logs and checkpoints; batches are
    indexed by ``(step, micro-batch, rank)`` so data-parallel ranks read disjoint
    data.
    """

    def __init__(
        self, cfg: DictConfig, registry: Registry, run_dir: Path, resume: bool = False
    ) -> None:
        _check_config(cfg)
        self.cfg = cfg
        self.registry = registry
        self.hook = registry.pm.hook
        self.run_dir = run_dir
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.is_main = self.rank == 0
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
        self.planner: GradController | None = next(
            (c for _, c in self.controllers if plans_windows(c)), None
        )
        if self.model.recurrence.directions == 2 and self.planner is not None:
            raise ConfigError(
                "Truncated BPTT cannot train a bidirectional model: the backward "
                "direction needs the whole sequence. Remove 'controllers.tbptt' or use a "
                "one-directional head."
            )
        self.optimizer = make_optimizer(self.model.parameters(), cfg.optim)

        # everything below is training progress, saved in every checkpoint
        self.step = 0
        self.carried: list[State] | None = None  # stream tasks: state across batches
        #: the current logging window (since the last train/* row) and totals
        self.counters: dict[str, float] = {
            "window_steps": 0,
            "window_loss": 0.0,
            "window_clipped": 0,
            "nonfinite": 0,
            "nonfinite_run": 0,
        }
        self.last_train_loss = float("nan")
        self.best: float | None = None
        self.bad_evals = 0
        self.last_eval: dict[str, float] = {}
        self.figures = plots.GradflowFigures(run_dir / "gradflow")

        self.stop_requested = False
        self.run_id = self._read_run_id() if resume else os.urandom(4).hex()
        if resume:
            self._restore(checkpoint.latest(run_dir))
        self.tracker: Tracker | None = None

    @property
    def config(self) -> DictConfig:
        """The resolved experiment config (the name the hooks document)."""
        return self.cfg

    # -- setup ------------------------------------------------------------------

    def _read_run_id(self) -> str:
        """The W&B run id of the run being resumed (a new one if run.json is gone)."""
        try:
            return str(json.loads((self.run_dir / "run.json").read_text())["run_id"])
        except (OSError, ValueError, KeyError):
            return os.urandom(4).hex()

    def _prepare_run_dir(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(to_yaml(self.cfg))
            write_json(self.run_dir / "run.json", {"run_id": self.run_id})
            self.task.save(self.run_dir)
            if self.step > 0:  # resumed: what was logged after the checkpoint runs again
                truncate_jsonl(self.run_dir / "gradflow.jsonl", self.step)
        except OSError as exc:
            raise ConfigError(
                f"Cannot write the run folder '{self.run_dir}': {exc.strerror or exc}. "
                "Pass a writable folder with --run-dir."
            ) from exc
        if self.cfg.trainer.precision == "bf16" and self.device.type != "cuda":
            tqdm.write(
                "rnnzoo: trainer.precision=bf16 needs CUDA; training in fp32", file=sys.stderr
            )
        t = self.cfg.tracking
        self.tracker = Tracker(
            self.run_dir,
            run_id=self.run_id,
            config=flatten(self.cfg),
            project=t.project,
            name=t.name or self.run_dir.name,
            group=t.group,
            tags=plugin_tags(self.cfg, self.registry),
            wandb_mode=t.wandb_mode,
            resume_step=self.step if self.step > 0 else None,
        )

    # -- checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit for bit."""
        rng = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "carried": [list(s) for s in self.carried] if self.carried is not None else None,
            "counters": dict(self.counters),
            "last_train_loss": self.last_train_loss,
            "best": self.best,
            "bad_evals": self.bad_evals,
            "last_eval": dict(self.last_eval),
            "heatmap": self.figures.state_dict(),
            "config": to_yaml(self.cfg),
        }

    def _restore(self, path: Path) -> None:
        state = checkpoint.load(path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            # torch's first line only says that loading failed; the next one says why
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise CheckpointError(
                f"Checkpoint '{path}' does not fit this experiment's model "
                f"({lines[1].rstrip('.') if len(lines) > 1 else exc}). Resume with the run's own "
                "config.yaml, or start a new run."
            ) from exc
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        carried = state.get("carried")
        self.carried = [tuple(t.to(self.device) for t in s) for s in carried] if carried else None
        self.counters.update(state.get("counters", {}))
        self.last_train_loss = float(state.get("last_train_loss", float("nan")))
        self.best = state.get("best")
        self.bad_evals = int(state.get("bad_evals", 0))
        self.last_eval = dict(state.get("last_eval", {}))
        self.figures.load_state_dict(state.get("heatmap") or {})

    def save_checkpoint(self) -> None:
        if not self.is_main:
            return
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingError(
                f"Refusing to write a checkpoint at step {self.step}: parameter '{bad[0]}' "
                "is not finite. The previous checkpoint is intact; lower the learning "
                "rate or add controllers.clip_norm and resume from it."
            )
        keep = self.cfg.trainer.keep_checkpoints
        checkpoint.save(self.run_dir, self.step, self.state_dict(), keep)

    # -- one training step -------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.trainer.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _watch(self, states: list[list[State]] | None) -> None:
        if states is None:
            return
        flat = [s[0] for per_dir in states for s in per_dir]  # the hidden states h_t
        for _, controller in self.controllers:
            if controller.needs_step_states:
                controller.watch_states(flat)

    def loss_items(self, batch: Batch) -> int:
        return batch.num_tokens() if self.task.spec.per_token else batch.batch_size

    def forward_backward(self, batch: Batch, scale: float = 1.0) -> float:
        """Forward and backward one batch, gradients summed into ``.grad``; returns
        the summed loss.

        The loss is divided by the batch's number of loss items and by ``scale``
        (the number of micro-batches of a gradient-accumulation step). When a
        controller plans truncated-BPTT windows, each window backpropagates its
        share of that same loss through its own steps only. A stream task starts
        from the state carried over from the previous batch and leaves its final
        state, detached, for the next one.
        """
        needs_states = any(c.needs_step_states for _, c in self.controllers)
        stream = self.task.spec.stream
        total = max(self.loss_items(batch), 1) * scale
        windows = self.planner.plan_windows(batch.steps) if self.planner is not None else None
        if windows is None:
            with self.autocast():
                out = self.model(batch, self.carried if stream else None, needs_states)
                self._watch(out.step_states)
                loss_sum, _ = self.model.loss(out.predictions, batch)
            (loss_sum / total).backward()
            if stream:
                self.carried = detach_state(out.final_state)
            return float(loss_sum.detach())

        per_token = self.task.spec.per_token
        starts = {w.start for w in windows}
        # the detached state entering each window start, computed on the way
        saved: dict[int, list[State] | None] = {0: self.carried if stream else None}
        loss_value = 0.0
        state: list[State] | None = None
        for w in windows:
            state = saved[w.start]
            cuts = sorted({w.loss_start, w.stop} | {s for s in starts if w.start < s < w.stop})
            begin = w.start
            window_loss: Tensor | None = None
            with self.autocast():
                for cut in cuts:
                    if cut <= begin:
                        continue
                    part = batch.window(begin, cut, per_token)
                    out = self.model(part, state, needs_states)
                    self._watch(out.step_states)
                    if begin >= w.loss_start:
                        part_sum, _ = self.model.loss(out.predictions, part)
                        window_loss = part_sum if window_loss is None else window_loss + part_sum
                    state = out.final_state
                    if cut in starts and cut not in saved:
                        saved[cut] = detach_state(state)
                    begin = cut
            if window_loss is not None:
                (window_loss / total).backward()
                loss_value += float(window_loss.detach())
        if stream:
            self.carried = detach_state(state)
        return loss_value

    def _apply_gradients(self, loss: float, metrics: dict[str, float]) -> bool:
        """Let the controllers shape the gradients and take the optimizer step, or
        skip the step when the loss or a gradient is not finite. Returns True when
        training must stop."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = global_norm(grads)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            return self._handle_nonfinite(self._nonfinite_name(loss), self.step + 1)
        self.counters["nonfinite_run"] = 0
        metrics["grad/norm_preclip"] = norm
        clipped = 0.0
        for name, controller in self.controllers:
            for key, value in controller.after_backward(self.model).items():
                metrics[f"controller/{name}/{key}"] = value
                if key == "clipped":
                    clipped = max(clipped, value)
        self.counters["window_clipped"] += clipped
        self.optimizer.step()
        return False

    def _nonfinite_name(self, loss: float) -> str:
        """What is not finite: the loss or the first parameter's gradient."""
        if not math.isfinite(loss):
            return "the loss"
        for name, p in self.model.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                return f"the gradient of '{name}'"
        return "the gradient norm"

    def _handle_nonfinite(self, what: str, step: int) -> bool:
        """Returns True when training must stop."""
        self.counters["nonfinite"] += 1
        self.counters["nonfinite_run"] += 1
        message = f"step {step}: {what} is not finite (NaN or Inf)"
        policy = self.cfg.trainer.on_nonfinite
        if policy == "raise":
            raise TrainingError(
                f"Training stopped at {message}; trainer.on_nonfinite=raise. Lower "
                "optim.lr, add controllers.clip_norm, or set trainer.on_nonfinite=skip."
            )
        tqdm.write(f"rnnzoo: {message}; the step was skipped", file=sys.stderr)
        if policy == "stop":
            tqdm.write(
                "rnnzoo: stopping (trainer.on_nonfinite=stop); lower optim.lr or add "
                "controllers.clip_norm",
                file=sys.stderr,
            )
            return True
        if self.counters["nonfinite_run"] >= self.cfg.trainer.max_nonfinite:
            tqdm.write(
                f"rnnzoo: {int(self.counters['nonfinite_run'])} non-finite steps in a row; "
                "stopping (raise trainer.max_nonfinite, lower optim.lr or add "
                "controllers.clip_norm)",
                file=sys.stderr,
            )
            return True
        return False

    # -- evaluation --------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, max_batches: int | None = None) -> dict[str, float]:
        """``val/loss`` and the task's metrics on its validation data."""
        self.model.eval()
        loss_sum, loss_count = 0.0, 0.0
        sums: dict[str, list[float]] = {}
        state = None
        try:
            for i, batch in enumerate(self.task.val_batches(self.cfg.trainer.batch_size)):
                if max_batches is not None and i >= max_batches:
                    break
                batch = batch.to(self.device)
                with self.autocast():
                    out = self.model(batch, state if self.task.spec.stream else None)
                    s, c = self.model.loss(out.predictions, batch)
                state = out.final_state
                loss_sum += float(s)
                loss_count += float(c)
                for key, (value, count) in self.task.metrics(out.predictions, batch).items():
                    acc = sums.setdefault(key, [0.0, 0.0])
                    acc[0] += value
                    acc[1] += count
        finally:
            self.model.train()
        result = {"val/loss": loss_sum / max(loss_count, 1.0)}
        result.update({f"val/{k}": v / max(c, 1.0) for k, (v, c) in sums.items()})
        return result

    def main_metric(self) -> tuple[str, str]:
        """The metric early stopping and ``best/*`` follow, and ``min`` or ``max``."""
        metric = self.cfg.trainer.early_stop_metric or self.task.main_metric
        key = metric if "/" in metric else f"val/{metric}"
        if key == f"val/{self.task.main_metric}":
            return key, self.task.main_metric_mode
        return key, "max" if key.endswith(HIGHER_IS_BETTER) else "min"

    def _after_eval(self, metrics: dict[str, float]) -> bool:
        """Track the best value; True when early stopping says stop."""
        key, mode = self.main_metric()
        if key not in metrics:
            raise ConfigError(
                f"Early-stopping metric '{key}' is not among the evaluation metrics "
                f"({', '.join(metrics)}). Set trainer.early_stop_metric to one of them."
            )
        value = metrics[key]
        better = self.best is None or (value < self.best if mode == "min" else value > self.best)
        if better:
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        patience = self.cfg.trainer.early_stop_patience
        return patience > 0 and self.bad_evals >= patience

    def _eval_and_log(self) -> bool:
        metrics = self.evaluate(self.cfg.trainer.eval_batches)
        stop = self._after_eval(metrics)
        if self.tracker is not None:
            self.tracker.log(self.step, metrics)
        self.last_eval = {**metrics, "step": float(self.step)}
        self.hook.rnnzoo_eval_end(trainer=self, step=self.step, metrics=metrics)
        return stop

    # -- gradient flow -----------------------------------------------------------

    def _probe_batch(self) -> Batch:
        batch = next(iter(self.task.val_batches(self.cfg.gradflow.batch_size)))
        return batch.to(self.device)

    def _gradflow(self, step: int, grad_norms: dict[str, float]) -> None:
        """Probe the gradient flow; log it with the per-parameter gradient norms."""
        assert self.tracker is not None
        result = gradflow.probe(self.model, self._probe_batch(), self.cfg.gradflow.loss_step)
        self.tracker.log(step, {**result.scalars, **grad_norms})
        with open(self.run_dir / "gradflow.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(gradflow.as_record(step, result)) + "\n")
        images = self.figures.add(step, result)  # redrawn within a time budget
        if images:
            self.tracker.log_images(step, images)

    # -- logging -----------------------------------------------------------------

    def _log_window(
        self, metrics: dict[str, float], elapsed: float, tokens: int
    ) -> dict[str, float]:
        """Log one ``train/*`` row: the latest step's values, with the loss and the
        clip rate averaged over the steps since the previous row."""
        c = self.counters
        n = max(c["window_steps"], 1)
        self.last_train_loss = c["window_loss"] / n
        row = {
            **metrics,
            "train/loss": self.last_train_loss,
            "clip/rate": c["window_clipped"] / n,
            "train/nonfinite_steps": c["nonfinite"],
            "perf/tokens_per_s": tokens / max(elapsed, 1e-9),
        }
        c["window_steps"], c["window_loss"], c["window_clipped"] = 0, 0.0, 0
        if self.tracker is not None:
            self.tracker.log(self.step, row)
        return row

    @contextlib.contextmanager
    def _deferred_interrupts(self) -> Iterator[None]:
        """SIGINT or SIGTERM lets the current step finish, then ``fit`` checkpoints
        and stops; a second signal stops at once (the last checkpoint is kept)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: object) -> None:
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            tqdm.write(
                f"rnnzoo: {signal.Signals(signum).name}: stopping after this step "
                "(send it again to stop at once)",
                file=sys.stderr,
            )

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    # -- the loop ----------------------------------------------------------------

    def batches(self, step: int) -> Iterator[Batch]:
        """The micro-batches of ``step``: a pure function of the step (and rank)."""
        t = self.cfg.trainer
        for micro in range(t.grad_accum):
            index = (step * t.grad_accum + micro) * self.world_size + self.rank
            yield self.task.train_batch(index, t.batch_size).to(self.device)

    def fit(self) -> dict[str, float]:
        """Train to ``trainer.steps`` (or early stop); return the summary.

        On SIGINT/SIGTERM the step in flight finishes, a checkpoint is written and
        ``KeyboardInterrupt`` is raised; ``rnnzoo train --resume`` continues from it
        exactly as if nothing had happened.
        """
        cfg = self.cfg
        t = cfg.trainer
        if self.is_main:
            self._prepare_run_dir()
        self.model.train()
        self.hook.rnnzoo_train_start(trainer=self)
        progress = tqdm(
            total=t.steps,
            initial=self.step,
            disable=not (t.progress and self.is_main),
            dynamic_ncols=True,
            unit="step",
            file=sys.stderr,
        )
        started = window_start = time.perf_counter()
        window_tokens = 0
        stop = False
        try:
            with self._deferred_interrupts():
                while self.step < t.steps and not stop and not self.stop_requested:
                    step = self.step
                    lr = lr_at(step, cfg.optim, t.steps)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr

                    # forward and backward every micro-batch; gradients add up
                    loss_sum, items = 0.0, 0
                    for batch in self.batches(step):
                        loss_sum += self.forward_backward(batch, t.grad_accum)
                        items += self.loss_items(batch)
                        window_tokens += batch.num_tokens()
                    loss = loss_sum / max(items, 1)
                    self.hook.rnnzoo_after_backward(trainer=self, step=step)

                    # controllers shape the gradients; the optimizer steps
                    probe_now = (
                        self.is_main
                        and cfg.gradflow.every > 0
                        and (step + 1) % cfg.gradflow.every == 0
                    )
                    norms = (
                        gradflow.parameter_grad_norms(self.model, "grad/preclip")
                        if probe_now
                        else {}
                    )
                    metrics: dict[str, float] = {"train/loss": loss, "train/lr": lr}
                    stop = self._apply_gradients(loss, metrics)
                    if probe_now:
                        norms.update(gradflow.parameter_grad_norms(self.model, "grad/postclip"))
                    self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    self.counters["window_steps"] += 1
                    self.counters["window_loss"] += loss
                    self.hook.rnnzoo_step_end(trainer=self, step=self.step, metrics=metrics)

                    # evaluate, log, probe and checkpoint when due
                    last = self.step == t.steps
                    if self.step % t.eval_every == 0 or last or stop:
                        stop = self._eval_and_log() or stop
                    if self.step % t.log_every == 0 or last or stop:
                        now = time.perf_counter()
                        row = self._log_window(metrics, now - window_start, window_tokens)
                        window_start, window_tokens = now, 0
                        progress.set_postfix(
                            loss=f"{row['train/loss']:.4f}",
                            tok_s=f"{row['perf/tokens_per_s']:.0f}",
                            refresh=False,
                        )
                    if probe_now:
                        self._gradflow(self.step, norms)
                    due = self.step % t.checkpoint_every == 0 or self.stop_requested
                    if due and not (last or stop):
                        self.save_checkpoint()
                    progress.update(1)
        except BaseException:  # an error, or a second signal: the last checkpoint stays
            progress.close()
            self.close()
            raise
        progress.close()
        if self.stop_requested and not stop and self.step < t.steps:
            tqdm.write(
                f"rnnzoo: stopped at step {self.step} with a checkpoint; continue with "
                f"`rnnzoo train --resume {self.run_dir}`",
                file=sys.stderr,
            )
            self.close()
            raise KeyboardInterrupt
        if self.last_eval.get("step") != self.step:
            self._eval_and_log()
        self.save_checkpoint()
        if self.tracker is not None and (images := self.figures.finish()):
            self.tracker.log_images(self.step, images)
        summary = self._summary(time.perf_counter() - started)
        if self.tracker is not None:
            self.tracker.summary(summary)
        self.hook.rnnzoo_train_end(trainer=self, summary=summary)
        self.close()
        return summary

    def _summary(self, wall: float) -> dict[str, float]:
        key, _ = self.main_metric()
        summary: dict[str, float] = {
            "step": float(self.step),
            "train/loss": self.last_train_loss,
            **{k: v for k, v in self.last_eval.items() if k != "step"},
            "train/nonfinite_steps": self.counters["nonfinite"],
            "time/wall_s": wall,
        }
        if self.best is not None:
            summary[f"best/{key}"] = self.best
        summary.update({f"baseline/{k}": v for k, v in self.task.baseline().items()})
        return summary

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
