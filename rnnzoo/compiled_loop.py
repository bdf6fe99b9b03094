"""``model.compile``: the step loop with blocks of steps compiled by ``torch.compile``.

The eager step loop (:func:`rnnzoo.recurrence.step_loop`) pays Python and autograd
dispatch for each of a cell's dozen small elementwise operations at every step, which
dominates at small batches and long sequences. Here one function runs ``K`` steps of
the cell's own ``forward`` back to back, and ``torch.compile`` (``fullgraph=True``,
``dynamic=False``) turns it into one graph whose gate arithmetic is fused, forward and
backward. The compiled block is reused for every block of ``K`` steps of every sequence
of the same batch size and dtype, so compile time does not grow with ``T``; the last
``T % K`` steps run eagerly. Padding is handled as in the eager loop: a padded step
keeps its sequence's state and outputs zeros.

A cell that ``torch.compile`` cannot trace in one graph (data-dependent Python
control flow, an unsupported call) runs through the eager loop instead, after one
warning that names the cell and the reason; training goes on.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from rnnzoo.activation import Activation
from rnnzoo.cell import Cell, State
from rnnzoo.recurrence import check_step, padded_step, padding

Block = Callable[[Cell, Tensor, State, "Tensor | None"], tuple[Tensor, State]]


def run_steps(
    cell: Cell, inputs: Tensor, state: State, real: Tensor | None
) -> tuple[Tensor, State]:
    """The cell over the time-major projected inputs ``[k, B, F]`` of ``k`` steps.

    Returns the outputs ``[B, k, output_size]`` and the state after the last step.
    With ``real`` (``[k, B, 1]`` booleans, true at real steps), a padded step keeps
    the state it was given and outputs zeros, as :func:`rnnzoo.recurrence.step_loop`.
    """
    outputs = []
    for t, x_t in enumerate(inputs.unbind(0)):
        output, new_state = cell(x_t, state)
        if real is not None:
            output, new_state = padded_step(real[t], output, new_state, state)
        state = new_state
        outputs.append(output)
    return torch.stack(outputs, 1), state


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

    One instance serves all cells of a :class:`~rnnzoo.recurrence.Recurrence`. When a
    cell cannot be compiled, :attr:`failure` holds why, a :class:`RuntimeWarning`
    says so once, and from then on :meth:`__call__` returns ``None`` (the caller
    runs the eager loop).
    """

    def __init__(self, steps: int = 16, backend: str = "inductor") -> None:
        if steps < 1:
            raise ValueError(f"steps per compiled block must be at least 1, got {steps}")
        self.steps = steps
        self.backend = backend
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
        inputs = cell.project_input(x).transpose(0, 1).contiguous()
        real_until, real = padding(lengths, x.shape[1], x.device)
        real = None if real is None else real.contiguous()
        if torch.is_grad_enabled() and (
            inputs.requires_grad or any(p.requires_grad for p in cell.parameters())
        ):
            # the state entering every later block requires grad: so that the first
            # block runs the same graph (not one compiled for it alone), so does its
            # initial state (a fresh leaf where it did not; nothing reads its gradient)
            state = tuple(s if s.requires_grad else s.detach().requires_grad_() for s in state)
        block = compiled_block(self.backend)
        outputs = []
        # one split (one backward node), not a slice per block: each slice's backward
        # would write a zero-filled gradient of the whole sequence
        for i, part in enumerate(inputs.split(self.steps)):
            start, stop = i * self.steps, i * self.steps + part.shape[0]
            mask = None if real is None or stop <= real_until else real[start:stop]
            before = state
            if part.shape[0] < self.steps:  # the last T % K steps
                out, state = run_steps(cell, part, state, mask)
            else:
                try:
                    out, state = block(cell, part, state, mask)
                except Exception as exc:  # whatever the compiler raised: run eagerly
                    self._fail(cell, exc)
                    return None
            if i == 0:
                check_step(cell, out[:, 0], state, before)
            outputs.append(out)
        return torch.cat(outputs, 1), state

    def _fail(self, cell: Cell, exc: Exception) -> None:
        kind = type(cell)
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
