"""``model.compile``: the step loop with blocks of steps compiled by ``torch.compile``.

The eager step loop (:func:`rnnzoo.recurrence.step_loop`) pays Python and autograd
dispatch for each of a cell's dozen small elementwise operations at every step, which
dominates at small batches and long sequences. Here one function runs ``K`` steps of
the cell's own ``forward`` back to back, and ``torch.compile`` (``fullgraph=True``,
``dynamic=False``) turns it into one graph whose gate arithmetic is fused, forward and
backward. The compiled block is reused for every block of ``K`` steps of every sequence
of the same batch size and dtype, so compile time does not grow with ``T``; the last
``T % K`` steps run eagerly. The block projects its own inputs, and the gradients of
the cell's weights take one product per block instead of one per step
(:mod:`rnnzoo.block_products`): at batch 16 those per-step products and the copies
around them cost more than the fused arithmetic saves. Padding is handled as in the
eager loop: a padded step keeps its sequence's state and outputs zeros.

A cell that ``torch.compile`` cannot trace in one graph (data-dependent Python
control flow, an unsupported call) runs through the eager loop instead, after one
warning that names the cell and the reason; training goes on.
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Callable

import torch
from torch import Tensor

from rnnzoo.activation import Activation
from rnnzoo.block_products import Products, block_taps, call_sites, transposed, weights_of
from rnnzoo.cell import Cell, State
from rnnzoo.recurrence import check_step, padded_step, padding

#: the cell's weights, the call sites, the weights' transposes, each site's taps (see
#: :func:`run_steps`)
Deferred = tuple[list[Tensor], tuple[int, ...], list[Tensor], list[Tensor]]
Block = Callable[
    [Cell, Tensor, State, "Tensor | None", "Deferred | None"],
    tuple[Tensor, State, list[Tensor]],
]


def run_steps(
    cell: Cell,
    x: Tensor,
    state: State,
    real: Tensor | None,
    products: Deferred | None = None,
) -> tuple[Tensor, State, list[Tensor]]:
    """The cell over the time-major raw inputs ``x [k, B, input_size]`` of ``k`` steps.

    The block projects its own inputs (``cell.project_input``, which acts on each step
    alone): inside the compiled graph that is one product for the block, and no
    projected tensor of the whole sequence is written, transposed or split.
    With ``products`` (:func:`~rnnzoo.block_products.weights_of`, the call sites of
    :func:`~rnnzoo.block_products.call_sites`, the weights' transposes and each
    site's taps ``[k, B, out]``), the cell's
    weight products run as :class:`~rnnzoo.block_products.Products` describes.
    Returns the outputs ``[B, k, output_size]``, the state after the last step and,
    with ``products``, each site's inputs ``[k, B, in]``. With ``real`` (``[k, B, 1]``
    booleans, true at real steps), a padded step keeps the state it was given and
    outputs zeros, as :func:`rnnzoo.recurrence.step_loop`.
    """
    outputs = []
    inputs: list[list[Tensor]] = []
    for t, x_t in enumerate(cell.project_input(x.transpose(0, 1)).unbind(1)):
        if products is None:
            output, new_state = cell(x_t, state)
        else:
            weights, sites, weights_t, taps = products
            step = Products(weights, x.shape[1], weights_t, [tap[t] for tap in taps], sites)
            with step:
                output, new_state = cell(x_t, state)
            inputs.append(step.inputs)
        if real is not None:
            output, new_state = padded_step(real[t], output, new_state, state)
        state = new_state
        outputs.append(output)
    recorded = [torch.stack(site) for site in zip(*inputs, strict=True)]
    return torch.stack(outputs, 1), state, recorded


@functools.cache
def compiled_block(backend: str) -> Block:
    """:func:`run_steps` compiled by ``backend``: one graph per block length, batch
    size, dtype and mask presence (shapes are static, so nothing is recompiled as
    blocks follow one another)."""
    return torch.compile(run_steps, backend=backend, dynamic=False, fullgraph=True)


def records_activations(cell: Cell) -> bool:
    """Whether the pre-activations of ``cell`` are being recorded (a Python side
    effect at every step, which a compiled graph would not repeat). rnnzoo's own
    recorders (the gradient-flow probe, the cell checks) run the eager step loop
    anyway; this keeps code that sets ``Activation.recorded`` itself correct."""
    return any(isinstance(m, Activation) and m.recorded is not None for m in cell.modules())


class CompiledLoop:
    """The step loop with ``steps`` steps per compiled block, compiled by ``backend``
    (``inductor``, torch.compile's default, generates fused C++ or Triton kernels).
    With ``block_weight_grads`` (the default) the cell's weight gradients take one
    product per block (:mod:`rnnzoo.block_products`); without, one per step, as
    autograd computes them (what the benchmark compares it with).

    One instance serves all cells of a :class:`~rnnzoo.recurrence.Recurrence`. When a
    cell cannot be compiled, :attr:`failure` holds why, a :class:`RuntimeWarning`
    says so once, and from then on :meth:`__call__` returns ``None`` (the caller
    runs the eager loop).
    """

    def __init__(
        self, steps: int = 16, backend: str = "inductor", block_weight_grads: bool = True
    ) -> None:
        if steps < 1:
            raise ValueError(f"steps per compiled block must be at least 1, got {steps}")
        self.steps = steps
        self.backend = backend
        self.block_weight_grads = block_weight_grads
        #: each cell's call sites, found once per batch size and set of trained weights
        self._sites: weakref.WeakKeyDictionary[Cell, tuple[object, tuple[int, ...]]] = (
            weakref.WeakKeyDictionary()
        )
        #: why a cell could not be compiled, or None while none has failed
        self.failure: str | None = None

    def __call__(
        self, cell: Cell, x: Tensor, state: State, lengths: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """``(outputs [B, T, output_size], final_state)`` of ``cell`` over raw inputs
        ``x [B, T, input_size]`` from ``state``, with the eager loop's results for
        padding (``lengths``); ``None`` where the cell runs eagerly instead."""
        if self.failure is not None or records_activations(cell):
            return None
        # time-major and contiguous: every block has the same strides whatever T is
        inputs = x.transpose(0, 1).contiguous()
        real_until, real = padding(lengths, x.shape[1], x.device)
        real = None if real is None else real.contiguous()
        training = torch.is_grad_enabled() and (
            inputs.requires_grad or any(p.requires_grad for p in cell.parameters())
        )
        if training:
            # the state entering every later block requires grad: so that the first
            # block runs the same graph (not one compiled for it alone), so does its
            # initial state (a fresh leaf where it did not; nothing reads its gradient)
            state = tuple(s if s.requires_grad else s.detach().requires_grad_() for s in state)
        products = None
        if training and self.block_weight_grads and x.shape[1] >= self.steps:
            weights = weights_of(cell)
            if sites := self._call_sites(cell, weights, x, state):
                products = (weights, sites, transposed(weights, sites))
        block = compiled_block(self.backend)
        outputs = []
        # one split (one backward node), not a slice per block: each slice's backward
        # would write a zero-filled gradient of the whole sequence
        for i, part in enumerate(inputs.split(self.steps)):
            start, stop = i * self.steps, i * self.steps + part.shape[0]
            mask = None if real is None or stop <= real_until else real[start:stop]
            before = state
            if part.shape[0] < self.steps:  # the last T % K steps
                out, state, _ = run_steps(cell, part, state, mask)
            else:
                try:
                    out, state = self._block(block, cell, part, state, mask, products)
                except Exception as exc:  # whatever the compiler raised: run eagerly
                    self._fail(cell, exc)
                    return None
            if i == 0:
                check_step(cell, out[:, 0], state, before)
            outputs.append(out)
        return torch.cat(outputs, 1), state

    def _call_sites(
        self, cell: Cell, weights: list[Tensor], x: Tensor, state: State
    ) -> tuple[int, ...]:
        """:func:`~rnnzoo.block_products.call_sites`, found again only when the batch
        size, dtype, device or the set of trained weights changes (a cell whose calls
        change otherwise is found out while compiling)."""
        key = (x.shape[0], x.dtype, x.device, tuple(map(id, weights)))
        known = self._sites.get(cell)
        if known is None or known[0] != key:
            known = self._sites[cell] = (key, call_sites(cell, weights, x, state))
        return known[1]

    @staticmethod
    def _block(
        block: Block,
        cell: Cell,
        part: Tensor,
        state: State,
        mask: Tensor | None,
        products: tuple[list[Tensor], tuple[int, ...], list[Tensor]] | None,
    ) -> tuple[Tensor, State]:
        """One compiled block; with ``products`` (the cell's weights, the call sites and
        the weights' transposes), the sites' weight gradients come from one product per
        site for the block (:mod:`rnnzoo.block_products`)."""
        if products is None:
            out, state, _ = block(cell, part, state, mask, None)
            return out, state
        weights, sites, weights_t = products
        taps, recorded = block_taps(weights, sites, part.shape[0], part.shape[1])
        out, state, inputs = block(cell, part, state, mask, (weights, sites, weights_t, taps))
        for into, site_inputs in zip(recorded, inputs, strict=True):
            into.append(site_inputs.detach())
        return out, state

    def _fail(self, cell: Cell, exc: Exception) -> None:
        kind = type(cell)
        while exc.__cause__ is not None or exc.__context__ is not None:  # the first cause
            exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
        self.failure = reason
        warnings.warn(
            f"model.compile: cell {kind.__name__} ({kind.__module__}) cannot be compiled "
            f"by torch.compile ({reason}). It runs through the eager step loop instead, "
            "as with model.compile=false; results are the same, only slower.",
            RuntimeWarning,
            stacklevel=3,
        )
