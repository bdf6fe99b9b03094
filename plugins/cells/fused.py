"""Run a built-in cell's maths through PyTorch's fused RNN kernels (cuDNN on GPU).

The kernels are reached through their public modules: each cell keeps a one-layer
``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` of its sizes, made on the meta device (no
memory, never trained), whose four parameters are then the cell's own Parameter
objects, so the module's forward computes with the cell's weights and gradients
reach them as in the step loop. Weights that are not the cell's Parameters (a
caller substituting tensors, as :func:`torch.func.functional_call` on the cell
does) run through :func:`torch.func.functional_call` on the template instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnzoo.activation import Activation
from rnnzoo.cell import State

#: the module's names for (weight_ih, weight_hh, bias_ih, bias_hh) of its one layer
WEIGHT_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")

# cuDNN wants all weights in one flat buffer (torch.nn.RNN keeps them so); a cell's
# weights are separate parameters, so cuDNN copies them per call and says so each time.
_UNFLAT_WEIGHTS = "RNN module weights are not part of single contiguous chunk of memory"


def fusable(activation: Activation, *kinds: type[Activation]) -> bool:
    """Whether a cell using ``activation`` may run a fused kernel built for one of
    ``kinds``: the same function, and no probe recording its pre-activations (the
    kernel never shows them to the module)."""
    return type(activation) in kinds and activation.recorded is None


class _Template:
    """Keeps the template's ``flatten_parameters`` from moving the cell's weights
    into one cuDNN buffer: they stay the cell's parameters, where they are."""

    def flatten_parameters(self) -> None:
        return None


class _RNN(_Template, nn.RNN):
    pass


class _LSTM(_Template, nn.LSTM):
    pass


class _GRU(_Template, nn.GRU):
    pass


#: kernel name -> torch.nn module (as a template) and its arguments
MODULES: dict[str, tuple[Callable[..., nn.RNNBase], dict[str, str]]] = {
    "rnn_tanh": (_RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (_RNN, {"nonlinearity": "relu"}),
    "gru": (_GRU, {}),
    "lstm": (_LSTM, {}),
}


class FusedKernel:
    """One layer, one direction of the fused kernel ``kind`` (a key of
    :data:`MODULES`), batch-first, with the semantics of the step loop.

    A plain object, not a module: a cell holds one without it adding parameters,
    buffers or state-dict entries.
    """

    def __init__(self, kind: str, input_size: int, hidden_size: int) -> None:
        module, extra = MODULES[kind]
        self.template = module(input_size, hidden_size, batch_first=True, device="meta", **extra)
        #: the Parameters the template holds now (the meta ones until the first call)
        self.bound: tuple[Tensor, ...] = ()

    def __call__(
        self, x: Tensor, state: State, weights: Sequence[Tensor], lengths: Tensor | None
    ) -> tuple[Tensor, State]:
        """Outputs ``[B, T, hidden]`` and final state for inputs ``x [B, T, input]``,
        initial ``state`` and the cell's ``weights`` (weight_ih, weight_hh, bias_ih,
        bias_hh in torch.nn's layout).

        Padded steps output zeros; each sequence's final state is taken after its
        last real step, and a sequence of length zero (a truncated-BPTT window past
        its end) keeps its initial state.
        """
        hx = tuple(s.unsqueeze(0).contiguous() for s in state)
        h0 = hx[0] if len(hx) == 1 else hx
        # dropout is 0, so training mode changes nothing but whether cuDNN keeps
        # what backward needs
        if self.template.training != torch.is_grad_enabled():
            self.template.train(torch.is_grad_enabled())
        if lengths is None:
            out, final = self._run(weights, x, h0)
            return out, _squeeze(final)
        empty = lengths <= 0
        packed = pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out_packed, final = self._run(weights, packed, h0)
        out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=x.shape[1])
        last = _squeeze(final)
        if bool(empty.any()):
            empty = empty.to(x.device)
            out = out.masked_fill(empty[:, None, None], 0.0)
            last = tuple(
                torch.where(empty[:, None], s, f) for s, f in zip(state, last, strict=True)
            )
        return out, last

    def _run(
        self, weights: Sequence[Tensor], inputs: Tensor | PackedSequence, h0: Tensor | State
    ) -> Any:
        """The template's forward on ``weights``: ``(output, h_n)`` or ``(output,
        (h_n, c_n))``, the output packed where ``inputs`` is."""
        if not (h0[0] if isinstance(h0, tuple) else h0).is_cuda:
            return self._forward(weights, inputs, h0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_UNFLAT_WEIGHTS)
            return self._forward(weights, inputs, h0)

    def _forward(
        self, weights: Sequence[Tensor], inputs: Tensor | PackedSequence, h0: Tensor | State
    ) -> Any:
        if self._bind(weights):
            return self.template(inputs, h0)
        # the template ties no weights: skip looking for ties
        params = dict(zip(WEIGHT_NAMES, weights, strict=True))
        return torch.func.functional_call(self.template, params, (inputs, h0), tie_weights=False)

    def _bind(self, weights: Sequence[Tensor]) -> bool:
        """Whether the template holds ``weights`` (the cell's Parameters) as its
        own, making them so where they are Parameters it does not hold yet."""
        if len(weights) == len(self.bound) and all(
            w is b for w, b in zip(weights, self.bound, strict=True)
        ):
            return True
        if not all(isinstance(w, nn.Parameter) for w in weights):
            return False
        for name, weight in zip(WEIGHT_NAMES, weights, strict=True):
            setattr(self.template, name, weight)  # the cell's Parameters, from now on
        self.bound = tuple(weights)
        return True


def _squeeze(final: Tensor | tuple[Tensor, ...]) -> State:
    """The kernel's ``[1, B, hidden]`` final state(s) as a cell state."""
    parts = (final,) if isinstance(final, Tensor) else final
    return tuple(f.squeeze(0) for f in parts)
