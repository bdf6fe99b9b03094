"""The one generic trainer. It knows nothing about cells, clipping or tags: it
calls the task, the model and the gradient controllers at fixed points."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor
from tqdm import tqdm

from rnnzoo import checkpoint, gradflow, plots
from rnnzoo.build import build_controllers, build_experiment_model, build_task
from rnnzoo.cell import State
from rnnzoo.config import flatten, to_yaml
from rnnzoo.controller import GradController, global_norm, plans_windows
from rnnzoo.errors import CheckpointError, ConfigError, TrainingError
from rnnzoo.registry import Registry
from rnnzoo.task import Batch
from rnnzoo.tracking import Tracker, write_json

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when it is there, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"'trainer.device' is '{name}': {exc}. Use auto, cpu or cuda.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"'trainer.device' is '{name}' but no CUDA device is available. Use "
            "trainer.device=auto or cpu."
        )
    return device


def lr_at(step: int, cfg: DictConfig, total_steps: int) -> float:
    """Linear warmup, then constant, linear or cosine decay to lr * min_lr_ratio."""
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
    raise ConfigError(
        f"'optim.schedule' is '{cfg.schedule}'; choose constant, linear or cosine."
    )


def make_optimizer(params: Any, cfg: DictConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"Unknown optimizer '{cfg.name}' at 'optim.name'; choose one of {', '.join(OPTIMIZERS)}.")


def detach_state(state: list[State] | None) -> list[State] | None:
    return None if state is None else [tuple(t.detach() for t in s) for s in state]


def _check_trainer_config(cfg: DictConfig) -> None:
    t = cfg.trainer
    for key in ("steps", "batch_size", "grad_accum", "log_every", "eval_every", "checkpoint_every"):
        if t[key] < 1:
            raise ConfigError(f"'trainer.{key}' must be at least 1, got {t[key]}.")
    if t.on_nonfinite not in ("skip", "stop", "raise"):
        raise ConfigError(f"'trainer.on_nonfinite' is '{t.on_nonfinite}'; choose skip, stop or raise.")
    if t.precision not in ("fp32", "bf16"):
        raise ConfigError(f"'trainer.precision' is '{t.precision}'; choose fp32 or bf16.")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"'optim.lr' must be positive, got {cfg.optim.lr}.")
    if cfg.gradflow.every < 0 or cfg.gradflow.batch_size < 1:
        raise ConfigError("'gradflow.every' must be >= 0 and 'gradflow.batch_size' >= 1.")


class Trainer:
    """Trains one experiment in one run folder; ``fit()`` runs it to the end.

    Only rank 0 (``RANK`` unset or 0) writes logs and checkpoints; batches are
    indexed by ``(step, micro-batch, rank)`` so data-parallel ranks read disjoint
    data.
    """

    def __init__(self, cfg: DictConfig, registry: Registry, run_dir: Path, resume: bool = False) -> None:
        _check_trainer_config(cfg)
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
        if self.model.recurrence.directions == 2 and self._planner() is not None:
            raise ConfigError(
                "Truncated BPTT cannot train a bidirectional model: the backward "
                "direction needs the whole sequence. Remove 'controllers.tbptt' or use a "
                "one-directional head."
            )
        self.optimizer = make_optimizer(self.model.parameters(), cfg.optim)
        self.step = 0
        self.carried: list[State] | None = None  # stream tasks: state across batches
        self.counters: dict[str, float] = {"clipped": 0, "nonfinite": 0, "nonfinite_run": 0, "logged_steps": 0}
        self.best: float | None = None
        self.bad_evals = 0
        self.last_eval: dict[str, float] = {}
        self.heatmap_rows: list[list[float]] = []
        self.heatmap_steps: list[int] = []

        self.run_id = self._read_run_id() if resume else os.urandom(4).hex()
        if resume:
            self._restore(checkpoint.latest(run_dir))
        self.tracker: Tracker | None = None

    # -- setup ------------------------------------------------------------------

    def _planner(self) -> GradController | None:
        return next((c for _, c in self.controllers if plans_windows(c)), None)

    def _read_run_id(self) -> str:
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
        except OSError as exc:
            raise ConfigError(
                f"Cannot write the run folder '{self.run_dir}': {exc.strerror or exc}. "
                "Pass a writable folder with --run-dir."
            ) from exc
        from rnnzoo.build import plugin_tags

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
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.empty(0)
        return {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "carried": [list(s) for s in self.carried] if self.carried is not None else None,
            "counters": dict(self.counters),
            "best": self.best,
            "bad_evals": self.bad_evals,
            "heatmap": {"rows": self.heatmap_rows, "steps": self.heatmap_steps},
            "config": to_yaml(self.cfg),
        }

    def _restore(self, path: Path) -> None:
        state = checkpoint.load(path)
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"Checkpoint '{path}' does not fit this experiment's model "
                f"({str(exc).splitlines()[0]}). Resume with the run's own config.yaml, "
                "or start a new run."
            ) from exc
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None and state["rng"]["cuda"].numel():
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        carried = state.get("carried")
        self.carried = [tuple(t.to(self.device) for t in s) for s in carried] if carried else None
        self.counters.update(state.get("counters", {}))
        self.best = state.get("best")
        self.bad_evals = int(state.get("bad_evals", 0))
        heat = state.get("heatmap") or {}
        self.heatmap_rows = list(heat.get("rows", []))
        self.heatmap_steps = list(heat.get("steps", []))

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
        checkpoint.save(self.run_dir, self.step, self.state_dict(), self.cfg.trainer.keep_checkpoints)

    # -- one training step -------------------------------------------------------

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cfg.trainer.precision == "bf16" and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _watch(self, states: list[list[Tensor]] | None) -> None:
        if states is None:
            return
        flat = [h for per_dir in states for h in per_dir]
        for _, controller in self.controllers:
            if controller.needs_step_states:
                controller.watch_states(flat)

    def loss_items(self, batch: Batch) -> int:
        return batch.num_tokens() if self.task.spec.per_token else batch.batch_size

    def forward_backward(self, batch: Batch, scale: float) -> tuple[float, list[State]]:
        """Forward and backward one batch, gradients summed into ``.grad``.

        The loss is divided by the batch's number of loss items (and by ``scale``
        for gradient accumulation). Truncated-BPTT windows, when a controller plans
        them, each backpropagate their share of that same loss.
        """
        needs_states = any(c.needs_step_states for _, c in self.controllers)
        state = self.carried if self.task.spec.stream else None
        total = max(self.loss_items(batch), 1) * scale
        planner = self._planner()
        windows = planner.plan_windows(batch.steps) if planner is not None else None
        if windows is None:
            with self.autocast():
                out = self.model(batch, state, return_states=needs_states)
                self._watch(out.step_states)
                loss_sum, _ = self.model.loss(out.predictions, batch)
            (loss_sum / total).backward()
            return float(loss_sum.detach()), out.final_state

        per_token = self.task.spec.per_token
        starts = {w.start for w in windows}
        saved: dict[int, list[State] | None] = {0: detach_state(state)}
        loss_value = 0.0
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
                    out = self.model(part, state, return_states=needs_states)
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
        assert state is not None
        return loss_value, state

    def _nonfinite(self, loss: float) -> str | None:
        """The name of what is not finite (the loss or a parameter's gradient)."""
        if not math.isfinite(loss):
            return "the loss"
        for name, p in self.model.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                return f"the gradient of '{name}'"
        return None

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
            return True
        if self.counters["nonfinite_run"] >= self.cfg.trainer.max_nonfinite:
            tqdm.write(
                f"rnnzoo: {int(self.counters['nonfinite_run'])} non-finite steps in a row; "
                "stopping (raise trainer.max_nonfinite, lower optim.lr or add controllers.clip_norm)",
                file=sys.stderr,
            )
            return True
        return False

    # -- evaluation --------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, max_batches: int | None = None) -> dict[str, float]:
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

    def _main_metric(self) -> tuple[str, str]:
        metric = self.cfg.trainer.early_stop_metric or self.task.main_metric
        key = metric if "/" in metric else f"val/{metric}"
        mode = self.task.main_metric_mode if metric in (self.task.main_metric, key) else "min"
        if metric.endswith("acc"):
            mode = "max"
        return key, mode

    def _after_eval(self, metrics: dict[str, float]) -> bool:
        """Track the best value; True when early stopping says stop."""
        key, mode = self._main_metric()
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

    # -- gradient flow -----------------------------------------------------------

    def _probe_batch(self) -> Batch:
        batch = next(iter(self.task.val_batches(self.cfg.gradflow.batch_size)))
        return batch.to(self.device)

    def _gradflow(self, step: int, pre: dict[str, float]) -> None:
        assert self.tracker is not None
        result = gradflow.probe(self.model, self._probe_batch(), self.cfg.gradflow.loss_step)
        post = gradflow.parameter_grad_norms(self.model, "grad/postclip")
        self.tracker.log(step, {**result.scalars, **pre, **post})
        with open(self.run_dir / "gradflow.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(gradflow.as_record(step, result)) + "\n")
        self.heatmap_rows.append(result.per_step["layer0/dir0"])
        self.heatmap_steps.append(step)
        images = plots.gradflow_figures(self.run_dir / "gradflow", result, self.heatmap_rows, self.heatmap_steps)
        self.tracker.log_images(step, images)

    # -- the loop ----------------------------------------------------------------

    def batches(self, step: int) -> Iterator[Batch]:
        t = self.cfg.trainer
        for micro in range(t.grad_accum):
            index = (step * t.grad_accum + micro) * self.world_size + self.rank
            yield self.task.train_batch(index, t.batch_size).to(self.device)

    def fit(self) -> dict[str, float]:
        """Train to ``trainer.steps`` (or early stop); return the summary."""
        cfg = self.cfg
        t = cfg.trainer
        if self.is_main:
            self._prepare_run_dir()
        self.model.train()
        self.hook.rnnzoo_train_start(trainer=self)
        progress = tqdm(
            total=t.steps, initial=self.step, disable=not (t.progress and self.is_main),
            dynamic_ncols=True, unit="step", file=sys.stderr,
        )
        started = time.perf_counter()
        window_start, window_tokens = time.perf_counter(), 0
        losses: list[float] = []
        stop = False
        try:
            while self.step < t.steps and not stop:
                step = self.step
                lr = lr_at(step, cfg.optim, t.steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr

                loss_sum, items, tokens = 0.0, 0, 0
                for batch in self.batches(step):
                    s, final = self.forward_backward(batch, t.grad_accum)
                    if self.task.spec.stream:
                        self.carried = detach_state(final)
                    loss_sum += s
                    items += self.loss_items(batch)
                    tokens += batch.num_tokens()
                loss = loss_sum / max(items, 1)
                self.hook.rnnzoo_after_backward(trainer=self, step=step)

                probe_now = self.is_main and cfg.gradflow.every > 0 and (step + 1) % cfg.gradflow.every == 0
                pre = gradflow.parameter_grad_norms(self.model, "grad/preclip") if probe_now else {}
                metrics: dict[str, float] = {"train/loss": loss, "train/lr": lr}
                bad = self._nonfinite(loss)
                if bad is None:
                    self.counters["nonfinite_run"] = 0
                    metrics["grad/norm_preclip"] = global_norm(
                        [p.grad for p in self.model.parameters() if p.grad is not None]
                    )
                    clipped = 0.0
                    for name, controller in self.controllers:
                        for key, value in controller.after_backward(self.model).items():
                            metrics[f"controller/{name}/{key}"] = value
                            if key == "clipped":
                                clipped = max(clipped, value)
                    self.counters["clipped"] += clipped
                    self.optimizer.step()
                else:
                    stop = self._handle_nonfinite(bad, step + 1)
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                self.counters["logged_steps"] += 1
                losses.append(loss)
                window_tokens += tokens

                if self.is_main and (self.step % t.log_every == 0 or self.step == t.steps):
                    elapsed = time.perf_counter() - window_start
                    steps_in_window = self.counters["logged_steps"]
                    metrics["clip/rate"] = self.counters["clipped"] / max(steps_in_window, 1)
                    metrics["train/nonfinite_steps"] = self.counters["nonfinite"]
                    metrics["perf/tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
                    assert self.tracker is not None
                    self.tracker.log(self.step, metrics)
                    progress.set_postfix(
                        loss=f"{loss:.4f}", tok_s=f"{metrics['perf/tokens_per_s']:.0f}", refresh=False
                    )
                    self.counters["clipped"] = 0
                    self.counters["logged_steps"] = 0
                    window_start, window_tokens = time.perf_counter(), 0
                if probe_now:
                    self._gradflow(self.step, pre)
                self.hook.rnnzoo_step_end(trainer=self, step=self.step, metrics=metrics)

                if self.step % t.eval_every == 0 or self.step == t.steps or stop:
                    stop = self._eval_and_log() or stop
                if self.step % t.checkpoint_every == 0 and self.step < t.steps and not stop:
                    self.save_checkpoint()
                progress.update(1)
        except KeyboardInterrupt:
            progress.close()
            tqdm.write(f"rnnzoo: interrupted at step {self.step}; saving a checkpoint", file=sys.stderr)
            self.save_checkpoint()
            self.close()
            raise
        progress.close()
        if self.step == 0 or self.last_eval.get("step") != self.step:
            self._eval_and_log()
        self.save_checkpoint()
        summary = self._summary(time.perf_counter() - started, losses)
        if self.tracker is not None:
            self.tracker.summary(summary)
        self.hook.rnnzoo_train_end(trainer=self, summary=summary)
        self.close()
        return summary

    def _eval_and_log(self) -> bool:
        metrics = self.evaluate(self.cfg.trainer.eval_batches)
        stop = self._after_eval(metrics)
        if self.tracker is not None:
            self.tracker.log(self.step, metrics)
        self.last_eval = {**metrics, "step": float(self.step)}
        self.hook.rnnzoo_eval_end(trainer=self, step=self.step, metrics=metrics)
        return stop

    def _summary(self, wall: float, losses: list[float]) -> dict[str, float]:
        key, _ = self._main_metric()
        tail = losses[-max(1, len(losses) // 10) :] if losses else [float("nan")]
        summary: dict[str, float] = {
            "step": float(self.step),
            "train/loss": sum(tail) / len(tail),
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
