"""rnnzoo: a plugin-based research framework for recurrent neural networks."""

from __future__ import annotations

import pluggy

from rnnzoo.activation import Activation
from rnnzoo.cell import Cell, State
from rnnzoo.controller import GradController, Window
from rnnzoo.head import Head
from rnnzoo.task import Batch, Task, TaskSpec

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("rnnzoo")

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
]


def __getattr__(name: str) -> object:
    # build_model pulls in the plugin manager; import it on first use only
    if name == "build_model":
        from rnnzoo.model import build_model

        return build_model
    raise AttributeError(name)
