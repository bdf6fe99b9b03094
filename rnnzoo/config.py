"""Experiment configuration: the schema's defaults, YAML files and overrides, loaded
and checked (keys, types, choices and ranges) before anything runs.

The schema and its defaults live in :mod:`rnnzoo.schema`.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from rnnzoo import interpolation, variants, yamlfile
from rnnzoo.errors import ConfigError, did_you_mean
from rnnzoo.overrides import normalize_overrides
from rnnzoo.plugins import looks_like_file, plugin_path
from rnnzoo.registry import type_name
from rnnzoo.schema import (
    ExperimentConfig,
    GradflowConfig,
    ModelConfig,
    OptimConfig,
    TrackingConfig,
    TrainerConfig,
    check_ranges,
    field_type,
)

__all__ = [
    "ExperimentConfig",
    "GradflowConfig",
    "ModelConfig",
    "OptimConfig",
    "TrackingConfig",
    "TrainerConfig",
    "field_type",
    "flatten",
    "load",
    "normalize_overrides",
    "to_yaml",
]


# -- the schema ------------------------------------------------------------------


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
    data = yamlfile.read_experiment(path)
    entries = data.get("plugins")
    if isinstance(entries, list):
        data["plugins"] = [plugin_path(spec, path) for spec in entries]
    return data


def _absolute_plugins(cfg: DictConfig) -> None:
    """Plugin paths from the overrides, from the working directory; one built by an
    interpolation must come out absolute, as it is resolved again on every load."""
    for i, spec in enumerate(cfg.plugins):
        if not OmegaConf.is_interpolation(cfg.plugins, i):
            cfg.plugins[i] = plugin_path(spec, None)
        elif looks_like_file(spec) and not Path(spec).expanduser().is_absolute():
            raise ConfigError(
                f"The plugin path '{spec}' comes from an interpolation and is relative; one "
                "in plugins: must give an absolute path (it is resolved again whenever the "
                "run is loaded), e.g. ${oc.env:HOME}/plugins/mine.py."
            )


def _unparsable(dotlist: list[str]) -> ConfigError:
    """The first override that does not parse, and why."""
    for item in dotlist:
        try:
            OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            detail = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            return ConfigError(
                f"Cannot parse the override '{yamlfile.short(item)}': {detail}. Values are "
                "read as YAML scalars; quote one that holds brackets, colons or '!', e.g. "
                "key='\"[x\"'."
            )
    return ConfigError(f"Cannot parse the overrides {' '.join(dotlist)}.")


def _merge(cfg: DictConfig, layer: DictConfig, source: str) -> DictConfig:
    """``layer`` over ``cfg``, its keys and types checked against the schema."""
    _check_shapes(layer, _SCHEMA, "", source)
    try:
        merged = OmegaConf.merge(cfg, layer)
    except OmegaConfBaseException as exc:
        raise _friendly(exc, source) from exc
    assert isinstance(merged, DictConfig)
    return merged


def _insert_variant(
    layers: list[tuple[str, DictConfig]], named: dict[str, DictConfig], path: str | Path | None
) -> None:
    """The chosen variant's settings (:mod:`rnnzoo.variants`) as the layer after
    the file's: ``variant`` of the overrides, else of the file. A ``variant`` in a
    file without ``variants:`` (a run's saved config.yaml) is a name only."""
    choices = [(layer.variant, src) for src, layer in layers if "variant" in layer]
    if not choices or choices[-1][0] is None:
        return
    name, source = str(choices[-1][0]), choices[-1][1]
    overridden = source == "the overrides"
    if not overridden and not named:
        return
    where = f"variant={name} in the overrides" if overridden else f"variant: {name} in {source}"
    layer = variants.pick(named, name, where, f"'{path}'" if path is not None else None)
    layers.insert(1, (f"variant '{name}' of '{path}'", layer))  # after the file


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The experiment config: defaults, then the YAML file, then the settings of
    the variant chosen (``variant=NAME``, one of the file's ``variants:``), then
    the overrides.

    Raises :class:`ConfigError` for unknown keys (listing the valid ones), values of
    the wrong type (naming the expected type) and values outside a field's choices.
    Plugin names and parameters are checked later, against the loaded plugins
    (:func:`rnnzoo.build.validate`).
    """
    layers: list[tuple[str, DictConfig]] = []
    named: dict[str, DictConfig] = {}
    if path is not None:
        data = _read_yaml(Path(path))
        named = variants.take(data, f"'{path}'")
        layers.append((f"'{path}'", OmegaConf.create(data)))
        for name, layer in named.items():  # every variant's keys, even one not chosen
            _merge(_SCHEMA, layer, f"variant '{name}' of '{path}'")
    dotlist = normalize_overrides(list(overrides))
    yamlfile.check_overrides(dotlist)
    if dotlist:
        try:
            layers.append(("the overrides", OmegaConf.from_dotlist(dotlist)))
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise _unparsable(dotlist) from exc
    _insert_variant(layers, named, path)
    cfg = _SCHEMA
    for source, layer in layers:
        cfg = _merge(cfg, layer, source)
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
    _absolute_plugins(cfg)
    _check_choices(cfg)
    problems = check_ranges(cfg)
    if problems:
        raise ConfigError(" ".join(problems))
    return cfg


def to_yaml(cfg: DictConfig, resolve: bool = False) -> str:
    """The config as YAML. As a run stores it (``config.yaml``, checkpoints),
    interpolations stay as written and are resolved again on every load, so a
    value from ``${oc.env:...}`` is never written down; ``resolve=True`` shows
    every value (``rnnzoo config``)."""
    return OmegaConf.to_yaml(cfg, resolve=resolve)


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """``{"model.cell": "lstm", ...}``: the shape W&B's run table groups by. Values
    are resolved, except those from the environment, which stay as written
    (``${oc.env:NAME}``; see :mod:`rnnzoo.interpolation`)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    walk("", interpolation.without_env(cfg))
    return out
