"""The experiment schema: every config key, its type and its default.

The comment above each field says why it has its default; ``docs/configuration.md``
is the reference built from them, and ``rnnzoo.config`` loads and checks configs
against them.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Any


def choice(default: str, *others: str) -> Any:
    """A string field that takes one of a fixed set of values, checked by
    :func:`rnnzoo.config.load`."""
    return field(default=default, metadata={"choices": (default, *others)})


@dataclass
class ModelConfig:
    # the LSTM is the baseline every other cell is compared with
    cell: str = "lstm"
    # the cell's own parameters (see `rnnzoo describe CELL`)
    cell_args: dict[str, Any] = field(default_factory=dict)
    # used by cells that take an activation (elman); gated cells use it for the
    # candidate, so the default keeps them equal to their textbook form
    activation: str = "tanh"
    # the activation's own parameters, e.g. negative_slope of leaky_relu
    activation_args: dict[str, Any] = field(default_factory=dict)
    # state size per layer and direction; 64 learns the synthetic tasks in minutes on a CPU
    hidden_size: int = 64
    # one layer keeps the gradient path through time the only deep path
    num_layers: int = 1
    # a head that needs both directions makes the model bidirectional anyway
    bidirectional: bool = False
    # dropout between stacked layers, as in torch.nn.LSTM
    dropout: float = 0.0
    # embedding size for token inputs; for real-valued inputs a linear projection
    # to this size, or null to feed the raw features to the cell (x_t W_x)
    input_dim: int | None = None
    # one prediction per sequence, as the adding problem asks
    head: str = "sequence"
    # the head's own parameters (see `rnnzoo describe HEAD`)
    head_args: dict[str, Any] = field(default_factory=dict)
    # run built-in cells through the fused torch.nn kernel when nothing needs the
    # per-step states; false runs the generic step loop everywhere
    fused: bool = True
    # compile blocks of compile_steps steps of the generic step loop with torch.compile;
    # off: the first step compiles for 40 s to minutes (5 s once cached) for a gain
    # of about 10 % at batch 16, T=1000 and a loss at batch 64, T=100
    compile: bool = False
    # steps per compiled block (the last T % K run eagerly): at batch 16, T=1000, 32 was
    # 2-3 % faster than 16 but compiles 1.5x as long, and 8 was slower
    compile_steps: int = 16


@dataclass
class OptimConfig:
    # Adam needs the least tuning across cells, so comparisons measure the cell
    name: str = choice("adam", "sgd", "adamw", "rmsprop")
    # Adam's usual step size; experiments raise it where a task needs it
    lr: float = 1e-3
    # off: the synthetic tasks do not overfit, and decay would blur cell comparisons
    weight_decay: float = 0.0
    # used by sgd and rmsprop only; 0 is plain SGD
    momentum: float = 0.0
    # Adam's published default for the first moment (the running mean)
    beta1: float = 0.9
    # Adam's published default for the second moment (the running square)
    beta2: float = 0.999
    # linear warmup from 0 over this many steps; 0 starts at the full rate
    warmup_steps: int = 0
    # after warmup: keep lr, or decay it to lr * min_lr_ratio at the last step
    schedule: str = choice("constant", "linear", "cosine")
    # where linear and cosine decay end, as a fraction of lr
    min_lr_ratio: float = 0.0


@dataclass
class TrainerConfig:
    # optimizer steps; enough for an LSTM on the adding problem
    steps: int = 1000
    # a wall-clock budget in seconds (null: none): the run ends cleanly, with an
    # evaluation and a checkpoint, once it has trained this long (over all resumes),
    # so that cells can be compared at equal compute as well as at equal steps
    max_time: float | None = None
    # a budget in training tokens (null: none), ended the same way: equal data
    max_tokens: int | None = None
    # sequences per batch; 64 keeps small models busy
    batch_size: int = 64
    # gradients of this many batches are summed before one optimizer step, for
    # large effective batches in little memory
    grad_accum: int = 1
    # seeds the model, the data order and the synthetic data: same seed, same run
    # (from -2**63 to 2**64 - 1, as torch.manual_seed takes)
    seed: int = 0
    # torch.use_deterministic_algorithms: slower, bit-for-bit repeatable on CUDA too
    deterministic: bool = False
    # auto picks CUDA when present, else the CPU; or cpu, cuda, cuda:N
    device: str = "auto"
    # bf16 autocasts the forward pass on CUDA; fp32 keeps gradient statistics exact
    precision: str = choice("fp32", "bf16")
    # steps between logged training metrics; logging every step slows small models
    log_every: int = 10
    # steps between evaluations on the validation set
    eval_every: int = 250
    # validation batches per evaluation; null = the whole validation set
    eval_batches: int | None = None
    # steps between checkpoints (one is always written at the end)
    checkpoint_every: int = 500
    # the newest checkpoints kept; older ones are deleted to save disk
    keep_checkpoints: int = 2
    # early stopping: stop after `patience` evaluations without improvement of
    # `metric`; 0 disables it
    early_stop_patience: int = 0
    # null = the task's main metric
    early_stop_metric: str | None = None
    # what to do when the loss or a gradient is NaN/Inf: skip the step (and stop
    # after `max_nonfinite` in a row), stop cleanly, or raise at once
    on_nonfinite: str = choice("skip", "stop", "raise")
    # non-finite steps in a row that `skip` tolerates: one bad batch is noise, ten
    # in a row mean the run has diverged
    max_nonfinite: int = 10
    # a progress bar on the terminal; switch off in batch jobs
    progress: bool = True
    # data-parallel processes under torchrun: null picks gloo on the CPU and NCCL
    # on CUDA, the backends torch.distributed recommends for each
    dist_backend: str | None = None
    # seconds a collective waits for the other processes before the run stops with
    # an error: long enough for a slow evaluation, short enough to notice a lost rank
    dist_timeout: int = 300
    # CPU threads of torch: auto times steps at 1 thread and at all cores and keeps
    # the faster, because on a shared machine more threads can be several times
    # slower and on an idle one faster; or a number (pinned, bit-exact repeats)
    threads: str = "auto"


@dataclass
class GradflowConfig:
    # probe the gradient flow every N steps (0 disables); each probe runs the step
    # loop, recording every state, on a small batch, so keep N large enough to be cheap
    every: int = 100
    # sequences per probe; the statistics are averages, 16 keeps them steady
    batch_size: int = 16
    # the loss step whose gradient is followed back in time (-1: the last step)
    loss_step: int = -1
    # where probes run: auto = own process when it costs training less (CPU, a core
    # free, 10+ probes; measured as it goes), never = training, always = own process
    process: str = choice("auto", "never", "always")


@dataclass
class TrackingConfig:
    # W&B project that collects the runs to compare
    project: str = "rnnzoo"
    # W&B run name and run-folder prefix, a plain folder name (no '/'); null =
    # TASK-CELL (the folder adds the time)
    name: str | None = None
    # W&B group, e.g. one per experiment file, to compare its variants
    group: str | None = None
    # extra W&B tags; cell:, activation:, controller:, head: and task: tags are added
    tags: list[str] = field(default_factory=list)
    # W&B mode when WANDB_MODE is unset: offline needs no account (`wandb sync` later)
    wandb_mode: str = choice("offline", "online", "disabled")
    # W&B entity (user or team) that owns the project; null = your default entity
    entity: str | None = None
    # a longer description of the run, shown in W&B; null: most runs are told
    # apart by their config
    notes: str | None = None
    # W&B job type, to tell e.g. train from eval runs in a project; null: all train
    job_type: str | None = None
    # checkpoints as W&B model artifacts: false (they can be large), `best` (best.pt
    # once, at the end of training) or `all` (every checkpoint as it is written)
    log_model: bool | str = False


@dataclass
class ExperimentConfig:
    # extra plugin modules or .py files to load (like `-p`); a relative path is
    # looked up beside the YAML file, then in the working directory, and saved
    # absolute. Loading a plugin imports and runs its code, as `pip install` runs a
    # package's: run only experiment files you trust
    plugins: list[str] = field(default_factory=list)
    # `name` picks the task; every other key is a parameter of that task
    task: dict[str, Any] = field(default_factory=lambda: {"name": "adding"})
    # input adapter, recurrence over the cell, head
    model: ModelConfig = field(default_factory=ModelConfig)
    # controller name -> its parameters, applied in the order listed
    controllers: dict[str, Any] = field(default_factory=dict)
    # optimizer and learning-rate schedule
    optim: OptimConfig = field(default_factory=OptimConfig)
    # the training loop: steps, batches, evaluation, checkpoints
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # the gradient-flow probes
    gradflow: GradflowConfig = field(default_factory=GradflowConfig)
    # W&B and the run's name
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # null = runs/NAME-TIME-RUNID (unique); `rnnzoo train --run-dir` overrides it
    run_dir: str | None = None
    # the experiment file's variant this run uses (one of its `variants:`, whose
    # settings are applied), kept so runs are labelled by it; null: the file as written
    variant: str | None = None


def field_type(key: str) -> Any:
    """The annotation of the dataclass field behind a dotted key, or None."""
    cls: Any = ExperimentConfig
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        cls = hints[part]
    return cls


# the largest float32: a learning rate above it overflows in the optimizer
_FLOAT32_MAX = 3.4028234663852886e38
# what tracking.log_model takes (a Union field: YAML's false stays a bool)
LOG_MODEL = (False, "best", "all")
# the seeds torch.manual_seed accepts (a negative one wraps around modulo 2**64)
SEED_RANGE = (-(2**63), 2**64 - 1)


def run_name_problem(name: str | None) -> str | None:
    """Why ``tracking.name`` cannot name a folder under ``runs/``, or None. It is
    one plain folder name: a path (``../x``, ``/tmp/x``, ``a/b``) would put the run
    somewhere else."""
    if name is None:
        return None
    plain = (
        name.strip() != ""
        and name not in (".", "..")
        and not any(c in name for c in "/\\")
        and not any(ord(c) < 32 or ord(c) == 127 for c in name)  # NUL, newlines, ...
        and not PureWindowsPath(name).drive
    )
    if plain:
        return None
    return (
        "'tracking.name' must be a plain folder name (no '/', '\\', drive or control "
        f"characters; not '.', '..' or empty), got {name!r}: the run folder is runs/NAME-TIME. Use "
        "--run-dir to put the run elsewhere, or null for TASK-CELL."
    )


def check_ranges(cfg: Any) -> list[str]:
    """The trainer, optimizer and probe settings outside their ranges, as one
    sentence each (empty when all are fine). Choices are checked separately."""
    t, o, g = cfg.trainer, cfg.optim, cfg.gradflow
    problems = []
    positive = ("steps", "batch_size", "grad_accum", "log_every", "eval_every")
    for key in (*positive, "checkpoint_every", "max_nonfinite", "keep_checkpoints"):
        if t[key] < 1:
            problems.append(f"'trainer.{key}' must be at least 1, got {t[key]}.")
    threads = str(t.threads)
    if threads != "auto" and not (threads.isdigit() and int(threads) >= 1):
        problems.append(f"'trainer.threads' must be auto or a number >= 1, got {t.threads!r}.")
    if t.eval_batches is not None and t.eval_batches < 1:
        problems.append(f"'trainer.eval_batches' must be at least 1 or null, got {t.eval_batches}.")
    if not 0 < o.lr <= _FLOAT32_MAX:  # NaN and inf fail too
        problems.append(f"'optim.lr' must be positive and finite, got {o.lr}.")
    if not (0 <= o.beta1 < 1 and 0 <= o.beta2 < 1 and o.weight_decay >= 0 and o.momentum >= 0):
        problems.append(
            "'optim.beta1' and 'optim.beta2' must be in [0, 1), 'optim.weight_decay' and "
            f"'optim.momentum' at least 0; got {o.beta1}, {o.beta2}, {o.weight_decay} and "
            f"{o.momentum}."
        )
    if o.warmup_steps < 0 or not 0.0 <= o.min_lr_ratio <= 1.0:
        problems.append(
            "'optim.warmup_steps' must be >= 0 and 'optim.min_lr_ratio' in [0, 1], got "
            f"{o.warmup_steps} and {o.min_lr_ratio}."
        )
    for key in ("max_time", "max_tokens"):
        if t[key] is not None and not t[key] > 0:
            problems.append(f"'trainer.{key}' must be positive or null, got {t[key]}.")
    if t.dist_timeout < 1:
        problems.append(f"'trainer.dist_timeout' must be at least 1 second, got {t.dist_timeout}.")
    if t.dist_backend not in (None, "gloo", "nccl", "mpi"):
        problems.append(f"'trainer.dist_backend' is '{t.dist_backend}'; choose gloo, nccl or mpi.")
    if g.every < 0 or g.batch_size < 1:
        problems.append("'gradflow.every' must be >= 0 and 'gradflow.batch_size' >= 1.")
    if not SEED_RANGE[0] <= t.seed <= SEED_RANGE[1]:
        problems.append(
            f"'trainer.seed' must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]} (what "
            f"torch.manual_seed accepts), got {t.seed}."
        )
    if cfg.tracking.log_model not in LOG_MODEL:
        problems.append(
            f"'tracking.log_model' must be false, best or all, got {cfg.tracking.log_model!r}."
        )
    name_problem = run_name_problem(cfg.tracking.name)
    if name_problem:
        problems.append(name_problem)
    return problems
