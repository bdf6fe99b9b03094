"""Experiment configuration: structured defaults, YAML files and overrides.

The dataclasses below are the schema and the defaults; the comment above each field
says why it has its default. ``docs/configuration.md`` is the reference built from them.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from rnnzoo.errors import ConfigError, did_you_mean
from rnnzoo.registry import type_name


def choice(default: str, *others: str) -> Any:
    """A string field that takes one of a fixed set of values, checked by :func:`load`."""
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
    # per-step states; false forces the reference step loop everywhere
    fused: bool = True


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
    # sequences per batch (per process under torchrun); 64 keeps small models busy
    batch_size: int = 64
    # gradients of this many batches are summed before one optimizer step, for
    # large effective batches in little memory
    grad_accum: int = 1
    # seeds the model, the data order and the synthetic data: same seed, same run
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


@dataclass
class GradflowConfig:
    # probe the gradient flow every N steps (0 disables); each probe runs the
    # reference step loop on a small batch, so keep N large enough to be cheap
    every: int = 100
    # sequences per probe; the statistics are averages, 16 keeps them steady
    batch_size: int = 16
    # the loss step whose gradient is followed back in time (-1: the last step)
    loss_step: int = -1


@dataclass
class TrackingConfig:
    # W&B project that collects the runs to compare
    project: str = "rnnzoo"
    # W&B run name and run-folder prefix; null = TASK-CELL (the folder adds the time)
    name: str | None = None
    # W&B group, e.g. one per experiment file, to compare its variants
    group: str | None = None
    # extra W&B tags; cell:, activation:, controller:, head: and task: tags are added
    tags: list[str] = field(default_factory=list)
    # W&B mode when WANDB_MODE is unset: offline needs no account (`wandb sync` later)
    wandb_mode: str = choice("offline", "online", "disabled")


@dataclass
class ExperimentConfig:
    # extra plugin modules or .py files to load (like `-p`); a relative path is
    # looked up beside the YAML file first
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
    # null = runs/NAME-TIME; `rnnzoo train --run-dir` overrides it
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
                        f"Override '--{arg}' has no value. Write '{arg}=VALUE' or '--{arg} VALUE'."
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


# -- the schema ------------------------------------------------------------------


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


def _expected(key: str) -> str:
    annotation = field_type(key)
    origin = typing.get_origin(annotation) or annotation
    if annotation is None:
        return "another type"
    if origin is dict:
        return "a mapping (key: value lines in YAML)"
    if origin is list:
        return "a list such as [a, b]"
    if dataclasses.is_dataclass(origin):
        return "a section (a mapping of its keys)"
    return type_name(annotation)


def _default(key: str) -> str:
    value = OmegaConf.select(_SCHEMA, key)
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value)
    return repr(value)


def _unknown_key(key: str, source: str) -> ConfigError:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(_SCHEMA, parent_key) if parent_key else _SCHEMA
    valid = [str(k) for k in parent] if isinstance(parent, DictConfig) else []
    where = f"'{parent_key}'" if parent_key else "the top level"
    return ConfigError(
        f"Unknown config key '{key}' in {source}.{did_you_mean(leaf, valid)} "
        f"Valid keys in {where}: {', '.join(valid)} (see docs/configuration.md)."
    )


def _wrong_type(key: str, source: str, detail: str) -> ConfigError:
    section = dataclasses.is_dataclass(field_type(key))
    hint = "See docs/configuration.md." if section else f"The default is {_default(key)}."
    return ConfigError(f"Config key '{key}' in {source} must be {_expected(key)}{detail}. {hint}")


def _check_shapes(layer: DictConfig, schema: DictConfig, prefix: str, source: str) -> None:
    """Sections must stay mappings and lists must stay lists (before merging)."""
    for key in map(str, layer):
        full = f"{prefix}{key}"
        if key not in schema or OmegaConf.is_interpolation(layer, key):
            continue
        given, expected = layer[key], schema[key]
        if isinstance(expected, DictConfig) and given is not None:
            if not isinstance(given, DictConfig):
                raise _wrong_type(full, source, f", not {given!r}")
            if dataclasses.is_dataclass(OmegaConf.get_type(expected)):
                _check_shapes(given, expected, f"{full}.", source)
        elif isinstance(expected, ListConfig) and not isinstance(given, (ListConfig, type(None))):
            raise _wrong_type(full, source, f", not {given!r}")
        elif not isinstance(expected, (DictConfig, ListConfig)) and isinstance(
            given, (DictConfig, ListConfig)
        ):
            what = "mapping" if isinstance(given, DictConfig) else "list"
            raise _wrong_type(full, source, f", not a {what}")


def _friendly(exc: OmegaConfBaseException, source: str) -> ConfigError:
    key = str(getattr(exc, "full_key", "") or getattr(exc, "key", "") or "")
    if isinstance(exc, ConfigKeyError) or "not in" in str(exc):
        return _unknown_key(key, source)
    if key:
        detail = str(getattr(exc, "msg", exc)).splitlines()[0].rstrip(".")
        return _wrong_type(key, source, f" ({detail})")
    return ConfigError(f"Invalid config in {source}: {exc}")


def _check_choices(cfg: DictConfig, cls: Any = ExperimentConfig, prefix: str = "") -> None:
    for f in dataclasses.fields(cls):
        value = cfg[f.name]
        key = f"{prefix}{f.name}"
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(
                f"Config key '{key}' is {value!r}; it must be one of "
                f"{', '.join(choices)}.{did_you_mean(str(value), choices)}"
            )
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            _check_choices(value, hint, f"{key}.")


_SCHEMA = OmegaConf.structured(ExperimentConfig)


# -- loading ---------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"Experiment file '{path}' does not exist. Pass the path of a YAML "
            "experiment, for example experiments/adding.yaml."
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Experiment file '{path}' is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
            f"at offset {exc.start}). Save it as UTF-8."
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"Experiment file '{path}' is not valid YAML: {problem}{where}. Fix the syntax "
            "there: 'key: value' lines, indented sections, closed brackets and quotes."
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"Experiment file '{path}' must hold a mapping of sections (task:, "
            f"model:, trainer:, ...), not {type(data).__name__}."
        )
    entries = data.get("plugins")
    if isinstance(entries, list):
        data["plugins"] = [_beside(spec, path.parent) for spec in entries]
    return data


def _beside(spec: Any, folder: Path) -> Any:
    """A relative ``.py`` path that exists next to the YAML file, made absolute."""
    if isinstance(spec, str) and spec.endswith(".py") and not Path(spec).is_absolute():
        candidate = folder / spec
        if candidate.is_file():
            return str(candidate.resolve())
    return spec


def _unparsable(dotlist: list[str]) -> ConfigError:
    """The first override that does not parse, and why."""
    for item in dotlist:
        try:
            OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            detail = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            return ConfigError(
                f"Cannot parse the override '{item}': {detail}. Values are read as YAML "
                "scalars; quote one that holds brackets, colons or '!', e.g. key='\"[x\"'."
            )
    return ConfigError(f"Cannot parse the overrides {' '.join(dotlist)}.")


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The experiment config: defaults, then the YAML file, then the overrides.

    Raises :class:`ConfigError` for unknown keys (listing the valid ones), values of
    the wrong type (naming the expected type) and values outside a field's choices.
    Plugin names and parameters are checked later, against the loaded plugins
    (:func:`rnnzoo.build.validate`).
    """
    layers: list[tuple[str, DictConfig]] = []
    if path is not None:
        layers.append((f"'{path}'", OmegaConf.create(_read_yaml(Path(path)))))
    dotlist = normalize_overrides(list(overrides))
    if dotlist:
        try:
            layers.append(("the overrides", OmegaConf.from_dotlist(dotlist)))
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise _unparsable(dotlist) from exc
    cfg = _SCHEMA
    for source, layer in layers:
        _check_shapes(layer, _SCHEMA, "", source)
        try:
            merged = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as exc:
            raise _friendly(exc, source) from exc
        assert isinstance(merged, DictConfig)
        cfg = merged
    try:  # every ${...} resolves now, not in the middle of a run
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        detail = str(getattr(exc, "msg", exc)).splitlines()[0]
        raise ConfigError(
            f"Config key '{getattr(exc, 'full_key', '')}' cannot be resolved: {detail}. "
            "Interpolations may name other keys (${model.hidden_size}) and omegaconf's "
            "built-in resolvers (oc.env, oc.select, ...); set what it refers to, or write "
            "the value itself."
        ) from exc
    _check_choices(cfg)
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
