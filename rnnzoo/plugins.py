"""The plugin manager: built-ins, entry points, and plugins the user names."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from rnnzoo import hookspecs
from rnnzoo.errors import ConfigError, PluginError, did_you_mean

ENTRY_POINT_GROUP = "rnnzoo"

#: Built-in plugins. They register through the same hooks as any other plugin.
DEFAULT_PLUGINS = (
    "rnnzoo_plugins.activations",
    "rnnzoo_plugins.cells.elman",
    "rnnzoo_plugins.cells.lstm",
    "rnnzoo_plugins.cells.gru",
    "rnnzoo_plugins.cells.irnn",
    "rnnzoo_plugins.cells.peephole_lstm",
    "rnnzoo_plugins.cells.cifg_lstm",
    "rnnzoo_plugins.cells.ln_lstm",
    "rnnzoo_plugins.cells.indrnn",
    "rnnzoo_plugins.cells.ugrnn",
    "rnnzoo_plugins.cells.exprnn",
    "rnnzoo_plugins.cells.antisymmetric_rnn",
    "rnnzoo_plugins.cells.cornn",
    "rnnzoo_plugins.cells.mingru",
    "rnnzoo_plugins.cells.minlstm",
    "rnnzoo_plugins.heads.sequence",
    "rnnzoo_plugins.heads.per_token",
    "rnnzoo_plugins.heads.lm",
    "rnnzoo_plugins.controllers.clipping",
    "rnnzoo_plugins.controllers.tbptt",
    "rnnzoo_plugins.tasks.synthetic",
    "rnnzoo_plugins.tasks.conllu",
    "rnnzoo_plugins.tasks.text_lm",
    "rnnzoo_plugins.gradflow_probes",
    "rnnzoo_plugins.threads",
)


#: every hook a plugin may implement, as ``{name: parameter names}``
HOOKS: dict[str, tuple[str, ...]] = {
    name: tuple(inspect.signature(getattr(hookspecs, name)).parameters)
    for name in dir(hookspecs)
    if name.startswith("rnnzoo_")
}


class PluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers where each plugin came from."""

    def __init__(self) -> None:
        super().__init__("rnnzoo")
        self.add_hookspecs(hookspecs)
        self.origins: dict[str, str] = {}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _hook_functions(pm: PluginManager, plugin: object) -> list[str]:
    """Names of the attributes of ``plugin`` marked with ``@rnnzoo.hookimpl``."""
    return [attr for attr in dir(plugin) if pm.parse_hookimpl_opts(plugin, attr) is not None]


def _register(pm: PluginManager, plugin: object, name: str, origin: str) -> None:
    if pm.is_registered(plugin):  # one module named twice, e.g. by -p and plugins:
        return
    for attr in _hook_functions(pm, plugin):
        if attr not in HOOKS:
            raise PluginError(
                f"Plugin '{name}' ({origin}) implements '{attr}', which is not an rnnzoo "
                f"hook.{did_you_mean(attr, HOOKS)} Hooks: {', '.join(sorted(HOOKS))} "
                "(documented in rnnzoo/hookspecs.py)."
            )
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        found = re.search(r"hook '(\w+)'", str(exc))
        hook = found.group(1) if found else ""
        expected = f" rnnzoo calls {hook}({', '.join(HOOKS[hook])})." if hook in HOOKS else ""
        raise PluginError(
            f"Plugin '{name}' ({origin}) does not fit rnnzoo's hooks: "
            f"{'; '.join(str(exc).splitlines()[1:])}.{expected} An implementation may take any "
            "of its hook's parameters, by name, and no others (see rnnzoo/hookspecs.py)."
        ) from exc
    except ValueError as exc:
        raise PluginError(
            f"Two plugins are called '{name}' ({origin}): {exc}. Rename one, or leave "
            "one of them out."
        ) from exc
    pm.origins[name] = origin
    pm.trace.root.get("register")(name, "from", origin)


def looks_like_file(spec: str) -> bool:
    """Whether a plugin ``spec`` names a file (else a module)."""
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def plugin_path(spec: Any, source: Path | None) -> Any:
    """A relative plugin file path, made absolute, so that a run's config.yaml names
    the very file that was loaded and nothing is looked up later in whatever folder
    a command runs from. In an experiment file a path is looked up beside the file,
    then in the working directory; in an override, in the working directory.

    A run's own config.yaml (with run.json beside it) holds absolute paths; a
    relative one there (written by an older rnnzoo) is refused rather than looked
    up in the working directory."""
    if not isinstance(spec, str) or not looks_like_file(spec) or "${" in spec:
        return spec
    path = Path(spec).expanduser()
    if path.is_absolute():
        return str(path)
    if source is not None:
        if (source.parent / path).is_file():
            return str((source.parent / path).resolve())
        if source.name == "config.yaml" and (source.parent / "run.json").is_file():
            raise ConfigError(
                f"The run's '{source}' names the plugin '{spec}' by a relative path, which "
                "could mean any file of that name in the folder a command runs from. "
                "Write the plugin file's absolute path in that plugins: list."
            )
    return str((Path.cwd() / path).resolve())


def import_plugin_file(path: Path) -> ModuleType:
    """Import a ``.py`` file once per process, under a name derived from its path."""
    path = path.resolve()
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    stem = re.sub(r"\W", "_", path.stem)
    mod_name = f"rnnzoo_user_plugin_{stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    file_spec = importlib.util.spec_from_file_location(mod_name, path)
    if file_spec is None or file_spec.loader is None:
        raise PluginError(f"Plugin file '{path}' cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[mod_name] = module
    try:
        file_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[mod_name]
        raise
    return module


def _load(spec: str) -> ModuleType:
    """Import a dotted module name, or a ``.py`` file by path."""
    if looks_like_file(spec) and not Path(spec).expanduser().is_file():
        raise PluginError(
            f"Plugin file '{spec}' does not exist (a relative path is looked up in "
            f"{Path.cwd()}; in an experiment's plugins: list, beside the YAML file first). "
            "Pass the path of a Python file with rnnzoo hooks, or a module name on sys.path."
        )
    try:
        if looks_like_file(spec):
            return import_plugin_file(Path(spec).expanduser())
        return importlib.import_module(spec)
    except PluginError:
        raise
    except SystemExit as exc:
        fix = "Fix the plugin, or leave it out of the -p options and the experiment's plugins: list"
        raise _exited(f"Plugin '{spec}'", exc, fix) from exc
    except Exception as exc:
        raise PluginError(
            f"Plugin '{spec}' failed to import: {type(exc).__name__}: {exc}. Fix the "
            "plugin, or leave it out of the -p options and the experiment's plugins: "
            "list; `rnnzoo --debug ...` shows the traceback."
        ) from exc


def _exited(plugin: str, exc: SystemExit, fix: str) -> PluginError:
    """A plugin that calls sys.exit() while being imported would end rnnzoo with
    its exit code (0, for a run that never happened)."""
    return PluginError(
        f"{plugin} called sys.exit({exc.code!r}) while being imported; a plugin must not "
        f"exit. {fix}; `rnnzoo --debug ...` shows where it exits."
    )


def _entry_point_plugins(pm: PluginManager) -> None:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown"
        origin = f"entry point '{ep.name}' of {dist}"
        try:
            plugin = ep.load()
        except SystemExit as exc:
            fix = "Fix or uninstall that package, or set RNNZOO_DISABLE_PLUGIN_AUTOLOAD=1"
            raise _exited(f"Plugin '{ep.name}' ({origin})", exc, fix) from exc
        except Exception as exc:
            raise PluginError(
                f"Plugin '{ep.name}' ({origin}) failed to import: "
                f"{type(exc).__name__}: {exc}. Fix or uninstall that package, or set "
                "RNNZOO_DISABLE_PLUGIN_AUTOLOAD=1 to skip installed plugins; "
                "`rnnzoo --debug ...` shows the traceback."
            ) from exc
        _register(pm, plugin, ep.name, origin)


def plugin_manager(extra: Iterable[str] = ()) -> PluginManager:
    """A plugin manager with the built-ins, installed plugins and ``extra`` ones.

    ``extra`` holds module names or ``.py`` paths (from ``-p`` and ``plugins:``).
    ``RNNZOO_DISABLE_PLUGIN_AUTOLOAD=1`` skips the ``rnnzoo`` entry points;
    ``RNNZOO_TRACE_PLUGINS=1`` prints every registration and hook call to stderr.
    """
    pm = PluginManager()
    if _flag("RNNZOO_TRACE_PLUGINS"):
        pm.trace.root.setwriter(lambda msg: sys.stderr.write(msg))
        pm.enable_tracing()
    for name in DEFAULT_PLUGINS:
        _register(pm, importlib.import_module(name), name, "built-in")
    if not _flag("RNNZOO_DISABLE_PLUGIN_AUTOLOAD"):
        _entry_point_plugins(pm)
    for spec in dict.fromkeys(extra):
        _register(pm, _load(spec), spec, "-p option or plugins: list")
    return pm
