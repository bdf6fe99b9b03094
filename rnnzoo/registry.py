"""Names to factories, per kind, with the parameters read from their signatures."""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from rnnzoo.errors import ConfigError, PluginError, UsageError, did_you_mean
from rnnzoo.plugins import PluginManager

#: kind -> (registration hook, plural used by ``rnnzoo list``)
KINDS: dict[str, tuple[str, str]] = {
    "cell": ("rnnzoo_cells", "cells"),
    "activation": ("rnnzoo_activations", "activations"),
    "controller": ("rnnzoo_grad_controllers", "controllers"),
    "head": ("rnnzoo_heads", "heads"),
    "task": ("rnnzoo_tasks", "tasks"),
}

#: constructor arguments the framework supplies itself, per kind
SUPPLIED: dict[str, frozenset[str]] = {
    "cell": frozenset({"input_size", "hidden_size", "activation"}),
    "activation": frozenset(),
    "controller": frozenset(),
    "head": frozenset({"input_size", "spec", "directions"}),
    "task": frozenset({"seed"}),
}

_MISSING = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    """One setting of a component, read from its constructor's signature."""

    name: str
    annotation: Any
    default: Any

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    @property
    def type_name(self) -> str:
        return type_name(self.annotation)


@dataclass(frozen=True)
class Component:
    """A registered factory: its kind, name, plugin of origin and parameters."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str

    @property
    def doc(self) -> str:
        return inspect.cleandoc(self.factory.__doc__ or "(no docstring)")

    @property
    def summary(self) -> str:
        """The docstring's first sentence."""
        paragraph = " ".join(self.doc.split("\n\n")[0].split())
        return re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph)[0].rstrip(":")

    def params(self) -> list[Param]:
        target = self.factory.__init__ if inspect.isclass(self.factory) else self.factory
        try:
            hints = typing.get_type_hints(target)
        except Exception:
            hints = {}
        out = []
        for p in inspect.signature(target).parameters.values():
            if p.name == "self" or p.name in SUPPLIED[self.kind]:
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out.append(Param(p.name, hints.get(p.name, Any), p.default))
        return out

    def takes(self, argument: str) -> bool:
        target = self.factory.__init__ if inspect.isclass(self.factory) else self.factory
        return argument in inspect.signature(target).parameters

    def check_args(self, args: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Validate ``args`` against the signature; return them coerced."""
        params = {p.name: p for p in self.params()}
        out = {}
        for key, value in args.items():
            if key not in params:
                valid = ", ".join(params) or "(none)"
                raise ConfigError(
                    f"Unknown parameter '{key}' for {self.kind} '{self.name}' at "
                    f"'{where}.{key}'.{did_you_mean(key, params)} Valid parameters: "
                    f"{valid} (see: rnnzoo describe {self.name})."
                )
            out[key] = coerce(value, params[key].annotation, f"{where}.{key}")
        missing = [p.name for p in params.values() if p.required and p.name not in out]
        if missing:
            raise ConfigError(
                f"{self.kind.capitalize()} '{self.name}' needs "
                f"{', '.join(repr(m) for m in missing)}: set "
                + ", ".join(f"'{where}.{m}'" for m in missing)
                + f" (see: rnnzoo describe {self.name})."
            )
        return out

    def build(self, args: Mapping[str, Any], where: str, **supplied: Any) -> Any:
        checked = self.check_args(args, where)
        supplied = {k: v for k, v in supplied.items() if self.takes(k)}
        return self.factory(**supplied, **checked)


class Registry:
    """Every component every loaded plugin registered, by kind and name."""

    def __init__(self, pm: PluginManager) -> None:
        self.pm = pm
        self._components: dict[str, dict[str, Component]] = {}
        # each implementation is called on its own to know which plugin registered
        # what; the trace (RNNZOO_TRACE_PLUGINS=1) shows these calls too
        trace = pm.trace.root.get("hook")
        for kind, (hook_name, _) in KINDS.items():
            table: dict[str, Component] = {}
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                try:
                    provided = impl.function() or {}
                except Exception as exc:
                    raise PluginError(
                        f"Plugin '{impl.plugin_name}' ({self.origin(impl.plugin_name)}) failed "
                        f"in {hook_name}: {type(exc).__name__}: {exc}. Fix the plugin or leave "
                        "it out; `rnnzoo --debug ...` shows the traceback."
                    ) from exc
                if not isinstance(provided, Mapping):
                    raise PluginError(
                        f"Plugin '{impl.plugin_name}' returned {type(provided).__name__} "
                        f"from {hook_name}; it must return a dict {{name: factory}}."
                    )
                trace(hook_name, "from", impl.plugin_name, "-->", list(provided))
                for name, factory in provided.items():
                    if name in table:
                        first, second = table[name].plugin, impl.plugin_name
                        raise PluginError(
                            f"Two plugins register the {kind} '{name}': '{first}' "
                            f"({self.origin(first)}) and '{second}' ({self.origin(second)}). "
                            "Rename one of them, or leave one plugin out."
                        )
                    if not isinstance(name, str) or not callable(factory):
                        raise PluginError(
                            f"Plugin '{impl.plugin_name}' registered {kind} {name!r} as "
                            f"{factory!r}; names must be strings and factories callable."
                        )
                    table[name] = Component(kind, name, factory, impl.plugin_name)
            self._components[kind] = dict(sorted(table.items()))

    def origin(self, plugin: str) -> str:
        """Where the plugin called ``plugin`` came from (built-in, entry point, ...)."""
        return self.pm.origins.get(plugin, "registered directly")

    def names(self, kind: str) -> list[str]:
        return list(self._components[kind])

    def components(self, kind: str) -> list[Component]:
        return list(self._components[kind].values())

    def get(self, kind: str, name: str) -> Component:
        table = self._components[kind]
        if name not in table:
            plural = KINDS[kind][1]
            raise UsageError(
                f"Unknown {kind} '{name}'.{did_you_mean(str(name), table)} "
                f"(see: rnnzoo list {plural})"
            )
        return table[name]

    def find(self, name: str) -> list[Component]:
        """Every component called ``name``, whatever its kind."""
        return [t[name] for t in self._components.values() if name in t]


# -- types --------------------------------------------------------------------


def type_name(annotation: Any) -> str:
    """A short, readable name of a type annotation: ``int``, ``float | None``."""
    if annotation is Any or annotation is _MISSING:
        return "any"
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "None"
    if origin is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a simple type annotation; ints widen to floats."""
    if annotation is Any or annotation is _MISSING:
        return value
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return coerce(value, option, where)
            except ConfigError:
                continue
        raise _type_error(value, annotation, where)
    if origin is Literal:
        if value in typing.get_args(annotation):
            return value
        raise _type_error(value, annotation, where)
    if annotation is type(None):
        if value is None:
            return None
        raise _type_error(value, annotation, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(value, annotation, where)
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(value, annotation, where)
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _type_error(value, annotation, where)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _type_error(value, annotation, where)
    if origin in (list, tuple) or annotation in (list, tuple):
        if isinstance(value, (list, tuple)):
            return list(value) if (origin or annotation) is list else tuple(value)
        raise _type_error(value, annotation, where)
    return value


def _type_error(value: Any, annotation: Any, where: str) -> ConfigError:
    return ConfigError(
        f"'{where}' must be {type_name(annotation)}, but the config gives "
        f"{value!r} ({type(value).__name__}). Change the value in the YAML file or "
        f"the override ({where}=...)."
    )
