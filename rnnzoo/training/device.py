"""Where training runs, and in which precision."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from rnnzoo.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when it is there, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"'trainer.device' is '{name}': {exc}. Use auto, cpu or cuda.") from exc
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"'trainer.device' is '{name}'; rnnzoo trains on auto, cpu or cuda.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"'trainer.device' is '{name}' but no CUDA device is available. Use "
            "trainer.device=auto or cpu."
        )
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when asked for; fp32 everywhere else."""
    if precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
