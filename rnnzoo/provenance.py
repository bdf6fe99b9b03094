"""Where each component of a run came from, and what to install when one is missing.

:func:`component_sources` says, for the task, cell, activation, head and each
gradient controller of an experiment, which distribution (and version) or plugin
file registered it; a run stores that beside its config. :func:`require_components`
turns an unknown name in a stored run (``eval``, ``--resume``) into an error that
names the package to install. The lines are plain strings, readable in
``config.yaml`` and W&B, and parsed back by :func:`parse_source`:

* ``rnnzoo 0.1.0 (built-in rnnzoo_plugins.cells.lstm)``
* ``rnnzoo-foo 1.2 (entry point 'foo')``
* ``rnnzoo-foo 1.2 (module foo.cells, -p or plugins:)``
* ``file /abs/leaky_cell.py sha256:1a2b3c4d5e6f (-p or plugins:)``
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from rnnzoo.errors import UsageError
from rnnzoo.plugins import ENTRY_POINT_GROUP
from rnnzoo.registry import Registry

#: the file in a run folder that holds what component_sources returned
SOURCES_FILE = "sources.json"
LINE = re.compile(r"(?P<what>\S+) (?P<version>\S+) \((?P<how>.*)\)")


@dataclass(frozen=True)
class Source:
    """A parsed source line: a distribution and its version, or a file and its hash."""

    distribution: str | None
    version: str
    how: str
    file: str | None = None

    def hint(self) -> str:
        if self.file is not None:
            return f"pass the plugin file again with -p {self.file}"
        return f"pip install '{self.distribution}=={self.version}'"


def _file_line(path: str) -> str:
    try:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    except OSError:
        digest = "unreadable"
    return f"file {Path(path).resolve()} sha256:{digest} (-p or plugins:)"


def _distribution_of(module: str) -> importlib.metadata.Distribution | None:
    top = module.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top, [])
    return importlib.metadata.distribution(names[0]) if names else None


def plugin_source(registry: Registry, plugin: str) -> str:
    """The source line of the plugin registered as ``plugin``."""
    origin = registry.origin(plugin)
    if origin == "built-in":
        return f"rnnzoo {importlib.metadata.version('rnnzoo')} (built-in {plugin})"
    if origin.startswith("entry point "):
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == plugin and ep.dist is not None:
                return f"{ep.dist.name} {ep.dist.version} (entry point '{plugin}')"
    module = registry.pm.get_plugin(plugin)
    path = getattr(module, "__file__", None)
    if plugin.endswith(".py") or "/" in plugin:
        return _file_line(path or plugin)
    dist = _distribution_of(plugin)
    if dist is not None:
        return f"{dist.metadata['Name']} {dist.version} (module {plugin}, -p or plugins:)"
    if path is not None:
        return _file_line(path)
    return f"unknown {plugin} ({origin})"


def _components(cfg: DictConfig, registry: Registry) -> dict[str, tuple[str, str]]:
    """``{key: (kind, name)}`` for every component the experiment uses."""
    chosen = {
        "task": ("task", str(cfg.task.name)),
        "cell": ("cell", str(cfg.model.cell)),
        "head": ("head", str(cfg.model.head)),
    }
    cell = registry.find(chosen["cell"][1])
    if not cell or any(c.kind == "cell" and c.takes("activation") for c in cell):
        chosen["activation"] = ("activation", str(cfg.model.activation))
    for name, args in (cfg.get("controllers") or {}).items():
        if args is not None:
            chosen[f"controllers.{name}"] = ("controller", str(name))
    return chosen


def component_sources(cfg: DictConfig, registry: Registry) -> dict[str, str]:
    """``{"cell": "rnnzoo-foo 1.2 (entry point 'foo')", "task": ..., "head": ...,
    "activation": ..., "controllers.clip_norm": ...}`` for the experiment ``cfg``
    (the activation only where the cell takes one). Every name must be registered."""
    return {
        key: plugin_source(registry, registry.get(kind, name).plugin)
        for key, (kind, name) in _components(cfg, registry).items()
    }


def parse_source(line: str) -> Source:
    """A source line of :func:`component_sources`, as a :class:`Source`."""
    if line.startswith("file "):
        _, path, digest, *how = line.split(" ")
        return Source(None, digest, " ".join(how).strip("()"), file=path)
    found = LINE.fullmatch(line)
    if found is None:
        return Source(None, "", line)
    return Source(found["what"], found["version"], found["how"])


def require_components(cfg: DictConfig, registry: Registry, sources: Mapping[str, str]) -> None:
    """Raise one :class:`~rnnzoo.errors.UsageError` for the components of a stored
    run that are not registered now, naming where each came from and what to install
    (``sources``: what :func:`component_sources` returned when the run started)."""
    problems = []
    for key, (kind, name) in _components(cfg, registry).items():
        if name in registry.names(kind) or key not in sources:
            continue
        source = parse_source(sources[key])
        if source.file is not None:
            origin = f"the plugin file {source.file}"
        elif source.distribution is not None:
            origin = f"package '{source.distribution}' {source.version} ({source.how})"
        else:
            origin = sources[key]
        problems.append(f"{kind.capitalize()} '{name}' came from {origin}; {source.hint()}.")
    if problems:
        raise UsageError(
            " ".join(problems) + " (recorded in the run folder when the run started; "
            "`rnnzoo plugins` lists the plugins loaded now)"
        )


def recorded_sources(run_dir: str | Path) -> dict[str, str]:
    """The sources a run folder recorded in :data:`SOURCES_FILE` (empty when it has
    none: a run from before sources were recorded, or an unreadable file)."""
    try:
        data = json.loads((Path(run_dir) / SOURCES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def changed_sources(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """One line per component whose source differs from the one the run recorded
    (another version of a package, an edited plugin file), for a warning."""
    return [
        f"{key}: the run used {recorded[key]}, now {current[key]}"
        for key in sorted(recorded.keys() & current.keys())
        if recorded[key] != current[key]
    ]
