"""Run a built-in cell's maths through PyTorch's fused RNN kernels (cuDNN on GPU)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnzoo.cell import State

# torch.rnn_tanh, torch.rnn_relu, torch.gru and torch.lstm share this calling convention
Kernel = Callable[..., tuple[Tensor, ...]]


def run_fused(
    kernel: Kernel, x: Tensor, state: State, weights: list[Tensor], lengths: Tensor | None
) -> tuple[Tensor, State] | None:
    """One layer, one direction, batch-first; ``None`` where the kernel cannot run
    (a sequence of length zero, which the packed kernels reject)."""
    hx: Tensor | tuple[Tensor, ...]
    hx = tuple(s.unsqueeze(0) for s in state)
    single = len(state) == 1
    if lengths is None:
        result = kernel(x, hx[0] if single else hx, weights, True, 1, 0.0, False, False, True)
        out, final = result[0], result[1:]
        return out, tuple(f.squeeze(0) for f in final)
    if bool((lengths <= 0).any()):
        return None
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    assert packed.sorted_indices is not None and packed.unsorted_indices is not None
    hx = tuple(h.index_select(1, packed.sorted_indices) for h in hx)
    result = kernel(
        packed.data, packed.batch_sizes, hx[0] if single else hx, weights, True, 1, 0.0, False, False
    )
    out_packed = PackedSequence(
        result[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
    )
    out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=x.shape[1])
    final = tuple(f.index_select(1, packed.unsorted_indices).squeeze(0) for f in result[1:])
    return out, final


KERNELS: dict[str, Kernel] = {
    "rnn_tanh": torch.rnn_tanh,
    "rnn_relu": torch.rnn_relu,
    "gru": torch.gru,
    "lstm": torch.lstm,
}
