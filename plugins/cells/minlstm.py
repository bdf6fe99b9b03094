"""minLSTM (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnzoo import Cell, State, hookimpl
from rnnzoo_plugins.cells.scan import g, log_g, scan_sequence, use_scan


class MinLSTMCell(Cell):
    """minLSTM: an LSTM whose gates and candidate see the input only, with the
    forget and input gates normalised to sum to one (Feng, Tung, Ahmed, Bengio &
    Hajimirsadeghi 2024, "Were RNNs All We Needed?", arXiv:2410.01201; the
    log-space version)::

        f  = sigmoid(W_f x + b_f)           i = sigmoid(W_i x + b_i)
        f' = f / (f + i)                    i' = i / (f + i)
        h~ = g(W_h x + b_h),     g(v) = v + 0.5 (v >= 0), sigmoid(v) (v < 0)
        h' = f' * h + i' * h~

    No cell state apart from h and no output gate: the normalisation makes the
    state's scale independent of time. As in ``mingru``, every matmul is in
    ``project_input`` and the step is elementwise; there is no recurrent matrix and
    no activation of the state. ``scan``: ``auto`` runs whole sequences as a parallel
    log-space scan on CUDA and through the step loop on a CPU; ``always`` and
    ``never`` force one.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        scan: Literal["auto", "always", "never"] = "auto",
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.scan = scan
        self.linear = nn.Linear(input_size, 3 * hidden_size)  # (f, i, h~)

    def project_input(self, x: Tensor) -> Tensor:
        k_f, k_i, v = self.linear(x).chunk(3, dim=-1)
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        return torch.cat([f / (f + i), i / (f + i), g(v)], dim=-1)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        f, i, candidate = x_t.chunk(3, dim=1)
        h = f * h + i * candidate
        return h, (h,)

    def forward_sequence(
        self, x: Tensor, state: State, lengths: Tensor | None
    ) -> tuple[Tensor, State] | None:
        if not use_scan(self.scan, x):
            return None
        k_f, k_i, v = self.linear(x).chunk(3, dim=-1)
        ratio = F.softplus(-k_f) - F.softplus(-k_i)  # log(i / f)
        log_f, log_i = -F.softplus(ratio), -F.softplus(-ratio)  # log f', log i'
        return scan_sequence(log_f, log_i + log_g(v), state, lengths)


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"minlstm": MinLSTMCell}
