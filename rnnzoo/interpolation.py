"""Config values that come from the environment, kept out of what a run stores.

``${oc.env:API_TOKEN}`` in an experiment reads a value the user chose not to
write down. A run's ``config.yaml`` and checkpoints keep every interpolation as
written (they are resolved again when the run is resumed, evaluated or sampled),
and the W&B config gets every value resolved except those that depend on the
environment: ``${oc.env:...}`` itself, and any interpolation that refers to such
a key, directly or through others.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: resolvers whose value comes from the environment
ENV_RESOLVERS = ("oc.env",)

# a node interpolation ${a.b}, ${a[0]}, ${.sibling}, ${..uncle}; and oc.select's key
_NODE = re.compile(r"\$\{\s*(\.*[\w\-\[\]]+(?:\.[\w\-\[\]]+)*)\s*\}")
_SELECT = re.compile(r"\$\{\s*oc\.select\s*:\s*(\.*[\w\-\[\]]+(?:\.[\w\-\[\]]+)*)")


def _leaves(node: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(node, dict):
        return {
            k: v
            for key, child in node.items()
            for k, v in _leaves(child, (*path, str(key))).items()
        }
    if isinstance(node, list):
        return {
            k: v for i, child in enumerate(node) for k, v in _leaves(child, (*path, str(i))).items()
        }
    return {path: node}


def _references(text: str, path: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The keys an interpolation string refers to, as absolute paths."""
    found = []
    for ref in _NODE.findall(text) + _SELECT.findall(text):
        dots = len(ref) - len(ref.lstrip("."))
        parts = tuple(p for p in re.split(r"[.\[\]]+", ref.lstrip(".")) if p)
        base = path[: len(path) - dots] if dots else ()
        found.append((*base, *parts))
    return found


def env_paths(cfg: DictConfig) -> set[tuple[str, ...]]:
    """The leaves of ``cfg`` whose value depends on the environment."""
    raw = {
        path: value
        for path, value in _leaves(OmegaConf.to_container(cfg, resolve=False)).items()
        if isinstance(value, str) and "${" in value
    }
    found = {path for path, value in raw.items() if any(r in value for r in ENV_RESOLVERS)}
    changed = True
    while changed:  # follow references until nothing new depends on the environment
        changed = False
        for path, value in raw.items():
            if path in found:
                continue
            for ref in _references(value, path):
                # the key itself, a section holding it, or a key inside it
                if any(env[: len(ref)] == ref or ref[: len(env)] == env for env in found):
                    found.add(path)
                    changed = True
                    break
    return found


def without_env(cfg: DictConfig) -> Any:
    """``cfg`` as plain containers: resolved, except that values depending on the
    environment stay the interpolation strings they were written as."""
    kept = env_paths(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    if not kept:
        return resolved
    raw = _leaves(OmegaConf.to_container(cfg, resolve=False))

    def rebuild(node: Any, path: tuple[str, ...]) -> Any:
        if path in kept:
            return raw[path]
        if isinstance(node, dict):
            return {k: rebuild(v, (*path, str(k))) for k, v in node.items()}
        if isinstance(node, list):
            return [rebuild(v, (*path, str(i))) for i, v in enumerate(node)]
        return node

    return rebuild(resolved, ())
