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
    "load_run",
    "train",
]


def __getattr__(name: str) -> object:
    # these pull in the plugin manager and the trainer; import them on first use only
    if name == "build_model":
        from rnnzoo.model import build_model

        return build_model
    if name == "train":
        from rnnzoo.api import train

        return train
    if name == "load_run":
        from rnnzoo.training.run import load_run

        return load_run
    raise AttributeError(name)
