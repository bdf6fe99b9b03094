"""The linear recurrence h_t = a_t * h_{t-1} + b_t over a whole sequence at once, in
log space (Heinsen 2023, "Efficient Parallelization of a Ubiquitous Sequential
Computation", arXiv:2311.06281), for cells whose a_t and b_t depend on the input
only (minGRU, minLSTM).

Unrolled, h_t = A_t h_0 + sum_{k<=t} (A_t / A_k) b_k with A_t = a_1 ... a_t. With
log A = cumsum(log a) both terms are a cumulative sum and a cumulative log-sum-exp:
a few whole-sequence kernels instead of T small steps. Needs a_t > 0 and b_t > 0
(given as logarithms); h_0 may have any sign.

Precision: the sum is exp(log A_t + logcumsumexp(log b - log A)), whose two terms
grow like |log A_t| and cancel, so the relative error grows like machine epsilon
times |log A_t| (about T times the mean -log a): negligible in float64, around 1e-4
relative in float32 at T = 2048 (tests/test_zoo_min.py measures it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnzoo import State


def g(v: Tensor) -> Tensor:
    """Feng et al.'s g: v + 0.5 for v >= 0, sigmoid(v) below; positive and continuous."""
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def log_g(v: Tensor) -> Tensor:
    """log g(v), without a log of a negative number in either branch."""
    return torch.where(v >= 0, torch.log(v.clamp(min=0) + 0.5), -F.softplus(-v))


def log_scan(log_a: Tensor, log_b: Tensor, h0: Tensor) -> Tensor:
    """h_1 .. h_T ``[B, T, H]`` of h_t = a_t h_{t-1} + b_t, from ``log_a``, ``log_b``
    ``[B, T, H]`` and ``h0`` ``[B, H]``."""
    log_cumulative = torch.cumsum(log_a, dim=1)
    carried = torch.exp(log_cumulative) * h0.unsqueeze(1)
    summed = torch.logcumsumexp(log_b - log_cumulative, dim=1)
    return carried + torch.exp(log_cumulative + summed)


def scan_sequence(
    log_a: Tensor, log_b: Tensor, state: State, lengths: Tensor | None
) -> tuple[Tensor, State]:
    """:func:`log_scan` with the step loop's padding rules: zeros after each
    sequence's end, and its state after its last real step (the initial state for a
    sequence of length zero). The scan is causal, so padded steps change nothing
    before them."""
    (h0,) = state
    h = log_scan(log_a, log_b, h0)
    if lengths is None:
        return h, (h[:, -1],)
    lengths = lengths.to(h.device)
    real = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]
    last = (lengths - 1).clamp(min=0)[:, None, None].expand(-1, 1, h.shape[2])
    final = torch.where((lengths > 0)[:, None], h.gather(1, last).squeeze(1), h0)
    return h.masked_fill(~real[..., None], 0.0), (final,)


def use_scan(mode: str, x: Tensor) -> bool:
    """Whether to scan: ``always``, ``never``, or ``auto``: on CUDA only, where a few
    large kernels replace T small launches; on a CPU the step loop is faster (3.8x at
    T = 2048, docs/cells.md)."""
    return mode == "always" or (mode == "auto" and x.device.type == "cuda")
