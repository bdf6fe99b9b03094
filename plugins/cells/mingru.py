"""minGRU (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Cell, State, hookimpl
from rnnzoo_plugins.cells.scan import g, log_g, scan_sequence, use_scan


class MinGRUCell(Cell):
    """minGRU: a GRU whose gate and candidate see the input only (Feng, Tung, Ahmed,
    Bengio & Hajimirsadeghi 2024, "Were RNNs All We Needed?", arXiv:2410.01201; the
    log-space version)::

        z  = sigmoid(W_z x + b_z)
        h~ = g(W_h x + b_h),     g(v) = v + 0.5 (v >= 0), sigmoid(v) (v < 0)
        h' = (1 - z) * h + z * h~

    Every matmul depends on the input only, so all of it is ``project_input`` (one
    matmul for the whole sequence) and the step is elementwise: a linear recurrence
    with input-dependent decay 1 - z, no recurrent matrix (sigma_max is not logged)
    and no activation of the state (act_deriv_mean is not logged). g keeps h~
    positive, which the log-space scan needs.

    ``scan``: ``auto`` runs whole sequences as a parallel log-space scan
    (``forward_sequence``) on CUDA and through the step loop on a CPU, where the
    loop is faster; ``always`` and ``never`` force one.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        scan: Literal["auto", "always", "never"] = "auto",
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.scan = scan
        self.linear = nn.Linear(input_size, 2 * hidden_size)  # (z, h~)

    def project_input(self, x: Tensor) -> Tensor:
        k, v = self.linear(x).chunk(2, dim=-1)
        return torch.cat([torch.sigmoid(k), g(v)], dim=-1)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        z, candidate = x_t.chunk(2, dim=1)
        h = (1 - z) * h + z * candidate
        return h, (h,)

    def forward_sequence(
        self, x: Tensor, state: State, lengths: Tensor | None
    ) -> tuple[Tensor, State] | None:
        if not use_scan(self.scan, x):
            return None
        k, v = self.linear(x).chunk(2, dim=-1)
        log_z, log_keep = -F.softplus(-k), -F.softplus(k)  # log z, log(1 - z)
        return scan_sequence(log_keep, log_z + log_g(v), state, lengths)


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"mingru": MinGRUCell}
