"""Shared test setup."""

from __future__ import annotations

import os
import tempfile

import torch

# The tests use small tensors: more threads only fight over shared CPUs.
torch.set_num_threads(1)

# W&B keeps logged tables and artifacts in WANDB_DATA_DIR (~/.local/share/wandb by
# default) until they are uploaded; the tests' offline runs never are.
_WANDB_DATA = tempfile.TemporaryDirectory(prefix="rnnzoo-tests-wandb-data-")
os.environ.setdefault("WANDB_DATA_DIR", _WANDB_DATA.name)
