"""A training run's settings while it trains: a read-only copy of its config for
plugins and the rare reads, and a plain snapshot for the reads of every step."""

from __future__ import annotations

from copy import deepcopy
from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig, OmegaConf


def frozen(cfg: DictConfig) -> DictConfig:
    """A read-only copy of ``cfg``: a training run's settings, read once when it
    starts, so that a plugin writing to them gets an error instead of a change the
    loop would not follow."""
    copy = deepcopy(cfg)
    OmegaConf.set_readonly(copy, True)
    return copy


def snapshot(cfg: DictConfig) -> Any:
    """A plain copy of ``cfg`` with attribute access (``snap.trainer.steps``), for
    the training loop: each read of a DictConfig key runs omegaconf's validation
    and interpolation (about 10 µs), a plain attribute read does not. Values are
    resolved; the copy does not follow later changes to ``cfg``."""

    def plain(node: Any) -> Any:
        if isinstance(node, dict):
            return SimpleNamespace(**{str(k): plain(v) for k, v in node.items()})
        return node

    return plain(OmegaConf.to_container(cfg, resolve=True))
