"""Built-in cells against torch.nn.RNN/LSTM/GRU with copied weights.

Outputs, final states and the gradients of the inputs, the initial state and every
parameter must agree to 1e-5, through the fused kernel and through the step loop,
for 1 and 2 layers, one and two directions, full-length and padded batches.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnzoo.cell import Cell
from rnnzoo.recurrence import Recurrence
from rnnzoo_plugins.activations import ReLU, Tanh
from rnnzoo_plugins.cells.elman import ElmanCell
from rnnzoo_plugins.cells.gru import GRUCell
from rnnzoo_plugins.cells.lstm import LSTMCell

TOLERANCE = 1e-5
BATCH, STEPS, INPUT, HIDDEN = 4, 6, 3, 5
#: unsorted (the sorting permutation is not its own inverse), with a full-length
#: sequence and a single-step one
LENGTHS = torch.tensor([3, STEPS, 1, 4])

CellFactory = Callable[[int, int], Cell]
CELLS: dict[str, tuple[CellFactory, Callable[..., nn.RNNBase]]] = {
    "elman-tanh": (lambda i, h: ElmanCell(i, h, Tanh()), lambda **kw: nn.RNN(**kw)),
    "elman-relu": (
        lambda i, h: ElmanCell(i, h, ReLU()),
        lambda **kw: nn.RNN(nonlinearity="relu", **kw),
    ),
    "lstm": (lambda i, h: LSTMCell(i, h, Tanh()), lambda **kw: nn.LSTM(**kw)),
    "gru": (lambda i, h: GRUCell(i, h, Tanh()), lambda **kw: nn.GRU(**kw)),
}


def copy_weights(reference: nn.RNNBase, ours: Recurrence) -> dict[str, nn.Parameter]:
    """Copy torch.nn's weights into our cells; map each torch name to our parameter."""
    pairs = {}
    for layer in range(ours.num_layers):
        for direction in range(ours.directions):
            cell = ours.cell(layer, direction)
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                mine = getattr(cell, name)
                with torch.no_grad():
                    mine.copy_(getattr(reference, name + suffix))
                pairs[name + suffix] = mine
    return pairs


def run_reference(
    reference: nn.RNNBase, x: Tensor, hx: tuple[Tensor, ...], lengths: Tensor | None
) -> tuple[Tensor, tuple[Tensor, ...]]:
    h0 = hx[0] if len(hx) == 1 else hx
    if lengths is None:
        out, final = reference(x, h0)
    else:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, final = reference(packed, h0)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, final if isinstance(final, tuple) else (final,)


def run_ours(
    ours: Recurrence, x: Tensor, hx: tuple[Tensor, ...], lengths: Tensor | None
) -> tuple[Tensor, tuple[Tensor, ...]]:
    state = [tuple(h[k] for h in hx) for k in range(hx[0].shape[0])]
    result = ours(x, lengths, state)
    final = tuple(torch.stack([s[i] for s in result.final_state]) for i in range(len(hx)))
    return result.outputs, final


def max_diff(a: Tensor, b: Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).detach().abs().max())


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "step-loop"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", list(CELLS))
def test_matches_torch_nn(
    kind: str, num_layers: int, bidirectional: bool, padded: bool, fused: bool
) -> None:
    torch.manual_seed(0)
    make_cell, make_reference = CELLS[kind]
    reference = make_reference(
        input_size=INPUT,
        hidden_size=HIDDEN,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=True,
    )
    ours = Recurrence(
        make_cell, INPUT, HIDDEN, num_layers, bidirectional=bidirectional, fused=fused
    )
    pairs = copy_weights(reference, ours)
    assert len(pairs) == len(list(reference.parameters())) == len(list(ours.parameters()))

    lengths = LENGTHS if padded else None
    x = torch.randn(BATCH, STEPS, INPUT)
    stacks = num_layers * (2 if bidirectional else 1)
    components = 2 if kind == "lstm" else 1
    hx = tuple(torch.randn(stacks, BATCH, HIDDEN) for _ in range(components))
    out_weight = torch.randn(BATCH, STEPS, ours.output_size)
    final_weights = [torch.randn(stacks, BATCH, HIDDEN) for _ in range(components)]

    def evaluate(run: Callable, module: nn.Module, params: list[Tensor]) -> list[Tensor]:
        x_leaf = x.clone().requires_grad_(True)
        hx_leaf = tuple(h.clone().requires_grad_(True) for h in hx)
        out, final = run(module, x_leaf, hx_leaf, lengths)
        loss = (out * out_weight).sum()
        loss = loss + sum((f * w).sum() for f, w in zip(final, final_weights, strict=True))
        grads = torch.autograd.grad(loss, [x_leaf, *hx_leaf, *params])
        return [out, *final, *grads]

    names = list(pairs)
    expected = evaluate(run_reference, reference, [getattr(reference, n) for n in names])
    got = evaluate(run_ours, ours, [pairs[n] for n in names])
    labels = ["outputs", *(f"final state {i}" for i in range(components)), "dL/dx"]
    labels += [f"dL/d initial state {i}" for i in range(components)]
    labels += [f"dL/d {n}" for n in names]
    assert len(labels) == len(expected) == len(got)
    for label, e, g in zip(labels, expected, got, strict=True):
        assert max_diff(e, g) <= TOLERANCE, f"{label} differs by {max_diff(e, g):.2e}"
    if padded:
        # the padded outputs are zero, as pad_packed_sequence makes them
        assert float(got[0][2, 1:].detach().abs().max()) == 0.0
