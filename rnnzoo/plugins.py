"""The plugin manager: built-ins, entry points, and plugins the user names."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pluggy

from rnnzoo import hookspecs
from rnnzoo.errors import PluginError

ENTRY_POINT_GROUP = "rnnzoo"

#: Built-in plugins. They register through the same hooks as any other plugin.
DEFAULT_PLUGINS = (
    "rnnzoo_plugins.activations",
    "rnnzoo_plugins.cells.elman",
    "rnnzoo_plugins.cells.lstm",
    "rnnzoo_plugins.cells.gru",
    "rnnzoo_plugins.cells.irnn",
    "rnnzoo_plugins.heads.sequence",
    "rnnzoo_plugins.heads.per_token",
    "rnnzoo_plugins.heads.lm",
    "rnnzoo_plugins.controllers.clipping",
    "rnnzoo_plugins.controllers.tbptt",
    "rnnzoo_plugins.tasks.synthetic",
)


HOOK_NAMES = frozenset(n for n in dir(hookspecs) if n.startswith("rnnzoo_"))


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers where each plugin came from."""

    def __init__(self) -> None:
        super().__init__("rnnzoo")
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, str] = {}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _register(pm: PluginManager, plugin: object, name: str, origin: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"Plugin '{name}' (from {origin}) does not fit rnnzoo's hooks: {exc}. "
            "Compare its hook functions with `rnnzoo/hookspecs.py` (names start with "
            "'rnnzoo_', parameters must be a subset of the spec's)."
        ) from exc
    except ValueError as exc:
        raise PluginError(
            f"Plugin '{name}' (from {origin}) is registered twice: {exc}. Remove one "
            "of the two `-p` options or `plugins:` entries."
        ) from exc
    unknown = [
        attr
        for attr in dir(plugin)
        if attr.startswith("rnnzoo_")
        and pm.parse_hookimpl_opts(plugin, attr) is not None
        and attr not in HOOK_NAMES
    ]
    if unknown:
        raise PluginError(
            f"Plugin '{name}' (from {origin}) implements unknown hook(s) "
            f"{', '.join(unknown)}. Check the spelling against `rnnzoo/hookspecs.py`."
        )
    pm.origins[name] = origin


def _import_module(spec: str) -> ModuleType:
    """Import a dotted module name, or a ``.py`` file by path."""
    if spec.endswith(".py") or os.sep in spec or "/" in spec:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise PluginError(
                f"Plugin file '{spec}' does not exist. Pass the path of a Python file "
                "with rnnzoo hook implementations, or a module name on sys.path."
            )
        mod_name = f"rnnzoo_user_plugin_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
        file_spec = importlib.util.spec_from_file_location(mod_name, path)
        assert file_spec is not None and file_spec.loader is not None
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[mod_name] = module
        try:
            file_spec.loader.exec_module(module)
        except Exception:
            del sys.modules[mod_name]
            raise
        return module
    return importlib.import_module(spec)


def _load(spec: str, origin: str) -> ModuleType:
    try:
        return _import_module(spec)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"Plugin '{spec}' (from {origin}) failed to import: "
            f"{type(exc).__name__}: {exc}. Fix the plugin, or leave it out "
            "(RNNZOO_DISABLE_PLUGIN_AUTOLOAD=1 skips installed plugins); "
            "`--debug` shows the traceback."
        ) from exc


def plugin_manager(extra: Iterable[str] = ()) -> PluginManager:
    """A plugin manager with the built-ins, installed plugins and ``extra`` ones.

    ``extra`` holds module names or ``.py`` paths (from ``-p`` and ``plugins:``).
    ``RNNZOO_DISABLE_PLUGIN_AUTOLOAD=1`` skips the ``rnnzoo`` entry points;
    ``RNNZOO_TRACE_PLUGINS=1`` prints every hook call to stderr.
    """
    pm = PluginManager()
    for name in DEFAULT_PLUGINS:
        _register(pm, importlib.import_module(name), name, "built-in")
    if not _flag("RNNZOO_DISABLE_PLUGIN_AUTOLOAD"):
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            origin = f"entry point '{ep.name}' of {dist}"
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"Plugin '{ep.name}' ({origin}) failed to import: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall {dist}, or set "
                    "RNNZOO_DISABLE_PLUGIN_AUTOLOAD=1 to skip installed plugins."
                ) from exc
            _register(pm, plugin, ep.name, origin)
    for spec in dict.fromkeys(extra):
        _register(pm, _load(spec, "user"), spec, f"user plugin {spec}")
    if _flag("RNNZOO_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    return pm
