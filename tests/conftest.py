"""Shared test setup."""

from __future__ import annotations

import torch

# The tests use small tensors: more threads only fight over shared CPUs.
torch.set_num_threads(1)
