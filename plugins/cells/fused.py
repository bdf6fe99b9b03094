"""Run a built-in cell's maths through PyTorch's fused RNN kernels (cuDNN on GPU)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnzoo.activation import Activation
from rnnzoo.cell import State

# torch.rnn_tanh, torch.rnn_relu, torch.gru and torch.lstm share this calling convention
Kernel = Callable[..., tuple[Tensor, ...]]

# cuDNN wants all weights in one flat buffer (torch.nn.RNN keeps them so); a cell's
# weights are separate parameters, so cuDNN copies them per call and says so each time.
_UNFLAT_WEIGHTS = "RNN module weights are not part of single contiguous chunk of memory"


def fusable(activation: Activation, kind: type[Activation]) -> bool:
    """Whether a cell using ``activation`` may run the fused kernel built for
    ``kind``: the same function, and no probe recording its pre-activations (the
    kernel never shows them to the module)."""
    return type(activation) is kind and activation.recorded is None


def run_fused(
    kernel: Kernel, x: Tensor, state: State, weights: list[Tensor], lengths: Tensor | None
) -> tuple[Tensor, State]:
    """One layer, one direction, batch-first, with the semantics of the step loop.

    Padded steps output zeros; each sequence's final state is taken after its last
    real step, and a sequence of length zero (a truncated-BPTT window past its end)
    keeps its initial state.
    """
    hx = tuple(s.unsqueeze(0).contiguous() for s in state)
    single = len(state) == 1
    # dropout is 0, so `train` changes nothing but whether cuDNN keeps what backward needs
    train = torch.is_grad_enabled()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_UNFLAT_WEIGHTS)
        if lengths is None:
            h0 = hx[0] if single else hx
            result = kernel(x, h0, weights, True, 1, 0.0, train, False, True)
            return result[0], tuple(f.squeeze(0) for f in result[1:])
        empty = lengths <= 0
        packed = pack_padded_sequence(
            x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        assert packed.sorted_indices is not None and packed.unsorted_indices is not None
        hx = tuple(h.index_select(1, packed.sorted_indices) for h in hx)
        h0 = hx[0] if single else hx
        result = kernel(packed.data, packed.batch_sizes, h0, weights, True, 1, 0.0, train, False)
    out_packed = PackedSequence(
        result[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
    )
    out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=x.shape[1])
    final = tuple(f.index_select(1, packed.unsorted_indices).squeeze(0) for f in result[1:])
    if bool(empty.any()):
        empty = empty.to(x.device)
        out = out.masked_fill(empty[:, None, None], 0.0)
        final = tuple(torch.where(empty[:, None], s, f) for s, f in zip(state, final, strict=True))
    return out, final


KERNELS: dict[str, Kernel] = {
    "rnn_tanh": torch.rnn_tanh,
    "rnn_relu": torch.rnn_relu,
    "gru": torch.gru,
    "lstm": torch.lstm,
}
