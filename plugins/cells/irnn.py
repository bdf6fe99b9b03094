"""IRNN: a ReLU Elman RNN started at the identity (Le, Jaitly & Hinton, 2015)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rnnzoo import hookimpl
from rnnzoo_plugins.activations import ReLU
from rnnzoo_plugins.cells.elman import ElmanCell


class IRNNCell(ElmanCell):
    """ReLU Elman RNN with W_hh = identity_scale * I, zero biases and input weights
    drawn from N(0, input_std^2), following Le et al. (2015): at initialisation the
    state is copied forward unchanged, so the gradient neither vanishes nor explodes.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        identity_scale: float = 1.0,
        input_std: float = 0.001,
    ) -> None:
        super().__init__(input_size, hidden_size, activation=ReLU())
        with torch.no_grad():
            self.weight_hh.copy_(torch.eye(hidden_size) * identity_scale)
            nn.init.normal_(self.weight_ih, 0.0, input_std)
            self.bias_ih.zero_()
            self.bias_hh.zero_()


@hookimpl
def rnnzoo_cells() -> dict[str, Any]:
    return {"irnn": IRNNCell}
