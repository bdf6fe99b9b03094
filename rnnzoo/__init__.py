"""rnnzoo: a plugin-based research framework for recurrent neural networks.

Importing the package imports neither torch nor the rest of rnnzoo: the names
below load their modules on first use. So ``python -m rnnzoo`` and the ``rnnzoo``
script (:func:`rnnzoo.__main__.main`) can set OpenMP's environment before torch
loads its OpenMP runtime, which reads it once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from rnnzoo.activation import Activation
    from rnnzoo.api import train
    from rnnzoo.cell import Cell, State
    from rnnzoo.controller import GradController, Window
    from rnnzoo.head import Head
    from rnnzoo.model import build_model
    from rnnzoo.task import Batch, Task, TaskSpec
    from rnnzoo.training.run import load_run

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("rnnzoo")

#: public name -> the module that defines it, imported on first use
_LAZY = {
    "Activation": "rnnzoo.activation",
    "Batch": "rnnzoo.task",
    "Cell": "rnnzoo.cell",
    "GradController": "rnnzoo.controller",
    "Head": "rnnzoo.head",
    "State": "rnnzoo.cell",
    "Task": "rnnzoo.task",
    "TaskSpec": "rnnzoo.task",
    "Window": "rnnzoo.controller",
    "build_model": "rnnzoo.model",
    "load_run": "rnnzoo.training.run",
    "train": "rnnzoo.api",
}

__all__ = [
    "Activation",
    "Batch",
    "Cell",
    "GradController",
    "Head",
    "State",
    "Task",
    "TaskSpec",
    "Window",
    "__version__",
    "build_model",
    "hookimpl",
    "load_run",
    "train",
]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module 'rnnzoo' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # once is enough
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
