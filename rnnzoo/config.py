"""Experiment configuration: structured defaults, YAML files and overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from rnnzoo.errors import ConfigError, did_you_mean


@dataclass
class ModelConfig:
    cell: str = "lstm"
    # the cell's own parameters (see `rnnzoo describe CELL`)
    cell_args: dict[str, Any] = field(default_factory=dict)
    # used by cells that take an activation (elman); gated cells use it for the
    # candidate, so the default keeps them equal to their textbook form
    activation: str = "tanh"
    activation_args: dict[str, Any] = field(default_factory=dict)
    hidden_size: int = 64
    num_layers: int = 1
    # a head that needs both directions makes the model bidirectional anyway
    bidirectional: bool = False
    # dropout between stacked layers, as in torch.nn.LSTM
    dropout: float = 0.0
    # embedding size for token inputs; for real-valued inputs a linear projection
    # to this size, or null to feed the raw features to the cell (x_t W_x)
    input_dim: int | None = None
    head: str = "sequence"
    head_args: dict[str, Any] = field(default_factory=dict)
    # run built-in cells through the fused torch.nn kernel when nothing needs the
    # per-step states; false forces the reference step loop everywhere
    fused: bool = True


@dataclass
class OptimConfig:
    name: str = "adam"  # sgd | adam | adamw | rmsprop
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd and rmsprop
    beta1: float = 0.9
    beta2: float = 0.999
    # linear warmup from 0, then `schedule` down to lr * min_lr_ratio at the last step
    warmup_steps: int = 0
    schedule: str = "constant"  # constant | linear | cosine
    min_lr_ratio: float = 0.0


@dataclass
class TrainerConfig:
    steps: int = 1000
    batch_size: int = 64
    # gradients of this many batches are summed before one optimizer step
    grad_accum: int = 1
    seed: int = 0
    # torch.use_deterministic_algorithms: slower, bit-for-bit repeatable on CUDA too
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | bf16 (autocast, CUDA only)
    log_every: int = 10
    eval_every: int = 250
    # validation batches per evaluation; null = the whole validation set
    eval_batches: int | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    # early stopping: stop after `patience` evaluations without improvement of
    # `metric` (default: the task's main metric); 0 disables it
    early_stop_patience: int = 0
    early_stop_metric: str | None = None
    # what to do when the loss or a gradient is NaN/Inf: skip the step (and stop
    # after `max_nonfinite` in a row), stop cleanly, or raise at once
    on_nonfinite: str = "skip"  # skip | stop | raise
    max_nonfinite: int = 10
    progress: bool = True


@dataclass
class GradflowConfig:
    # probe the gradient flow every N steps (0 disables); each probe runs the
    # reference step loop on a small batch, so keep N large enough to be cheap
    every: int = 100
    batch_size: int = 16
    # the loss step whose gradient is followed back in time (-1: the last step)
    loss_step: int = -1


@dataclass
class TrackingConfig:
    project: str = "rnnzoo"
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # W&B mode when WANDB_MODE is unset: offline needs no account (`wandb sync` later)
    wandb_mode: str = "offline"  # offline | online | disabled


@dataclass
class ExperimentConfig:
    # extra plugin modules or .py files to load (like `-p`)
    plugins: list[str] = field(default_factory=list)
    # `name` picks the task; every other key is a parameter of that task
    task: dict[str, Any] = field(default_factory=lambda: {"name": "adding"})
    model: ModelConfig = field(default_factory=ModelConfig)
    # controller name -> its parameters, applied in the order listed
    controllers: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    gradflow: GradflowConfig = field(default_factory=GradflowConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # default: runs/<name>-<time>
    run_dir: str | None = None


def normalize_overrides(args: list[str] | tuple[str, ...]) -> list[str]:
    """Accept ``key=value``, ``--key=value`` and ``--key value`` (W&B sweep agents)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            arg = arg[2:]
            if "=" not in arg:
                if i + 1 >= len(args) or args[i + 1].startswith("--"):
                    raise ConfigError(
                        f"Override '--{arg}' has no value. Write '{arg}=VALUE' "
                        f"or '--{arg} VALUE'."
                    )
                arg = f"{arg}={args[i + 1]}"
                i += 1
        if "=" not in arg:
            raise ConfigError(
                f"Override '{arg}' is not of the form key=value (for example "
                "model.cell=lstm or trainer.steps=500)."
            )
        out.append(arg)
        i += 1
    return out


def _schema_keys(node: Any) -> list[str]:
    return list(node.keys()) if isinstance(node, DictConfig) else []


def _friendly(exc: OmegaConfBaseException, schema: DictConfig, source: str) -> ConfigError:
    key = str(getattr(exc, "full_key", "") or getattr(exc, "key", "") or "")
    if isinstance(exc, ConfigKeyError) or "not in" in str(exc):
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(schema, parent_key) if parent_key else schema
        valid = _schema_keys(parent)
        where = f"'{parent_key}'" if parent_key else "the top level"
        return ConfigError(
            f"Unknown config key '{key}' in {source}.{did_you_mean(leaf, valid)} "
            f"Valid keys in {where}: {', '.join(valid)}."
        )
    if isinstance(exc, ValidationError):
        expected = OmegaConf.select(schema, key)
        kind = type(expected).__name__ if expected is not None else "another type"
        return ConfigError(
            f"Config key '{key}' in {source} has the wrong type: {exc.msg.splitlines()[0]} "
            f"Expected {kind} (the default is {expected!r})."
        )
    return ConfigError(f"Invalid config in {source}: {exc}")


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The experiment config: defaults, then the YAML file, then the overrides."""
    schema = OmegaConf.structured(ExperimentConfig)
    layers: list[tuple[str, Any]] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"Experiment file '{path}' does not exist. Pass the path of a YAML "
                "experiment, for example experiments/adding.yaml."
            )
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Experiment file '{path}' is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(
                f"Experiment file '{path}' must hold a mapping of sections (task:, "
                f"model:, trainer:, ...), not {type(data).__name__}."
            )
        layers.append((f"'{path}'", OmegaConf.create(data)))
    dotlist = normalize_overrides(list(overrides))
    if dotlist:
        try:
            layers.append(("the overrides", OmegaConf.from_dotlist(dotlist)))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"Cannot parse the overrides {dotlist}: {exc}") from exc
    cfg = schema
    for source, layer in layers:
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as exc:
            raise _friendly(exc, schema, source) from exc
    assert isinstance(cfg, DictConfig)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """``{"model.cell": "lstm", ...}``: the shape W&B's run table groups by."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return out
