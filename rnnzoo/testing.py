"""Reference implementations for tests and cell authors.

Nothing here runs in training. :func:`check_cell` checks a cell class against
the cell contract, rule by rule; :func:`reference_step_loop` is the plainest
correct version of the engine's step loop, which tests compare the engine with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from rnnzoo.cell import Cell, State
from rnnzoo.cellcheck import (
    ActivationSource,
    CellContractError,
    RuleResult,
    cell_contract,
    describe,
)

__all__ = [
    "CellContractError",
    "RuleResult",
    "cell_contract",
    "check_cell",
    "reference_step_loop",
]


def reference_step_loop(
    cell: Cell, x: Tensor, state: State, lengths: Tensor | None, record: bool
) -> tuple[Tensor, State, list[State]]:
    """:func:`rnnzoo.recurrence.step_loop` written the obvious way: step ``t`` is read
    as ``projected[:, t]``, ``cell.forward`` is called once per step, and every step
    of a padded batch keeps the state and outputs zeros where ``t >= lengths[b]``.

    Same arguments and results as the engine's loop. Its backward pass is quadratic
    in the number of steps (each ``projected[:, t]`` sends back a gradient the size
    of the whole sequence), so keep ``T`` small.
    """
    projected = cell.project_input(x)
    outputs: list[Tensor] = []
    recorded: list[State] = []
    for t in range(x.shape[1]):
        output, new_state = cell(projected[:, t], state)
        if lengths is not None:
            real = (lengths.to(x.device) > t)[:, None]
            new_state = tuple(
                torch.where(real, n, s) for n, s in zip(new_state, state, strict=True)
            )
            output = torch.where(real, output, torch.zeros_like(output))
        state = new_state
        outputs.append(output)
        if record:
            recorded.append(state)
    return torch.stack(outputs, 1), state, recorded


def check_cell(
    factory: Callable[..., Any],
    *,
    name: str | None = None,
    activation: ActivationSource = "tanh",
    device: str | torch.device | None = None,
    **settings: Any,
) -> list[RuleResult]:
    """Check that ``factory`` (a cell class) keeps the cell contract; raise one
    :class:`CellContractError` (an ``AssertionError``) that names the cell and every
    rule it breaks, or return what each rule checked.

    ``settings`` are the cell's own keyword parameters; ``activation`` is what a
    cell with an ``activation`` parameter receives (an activation plugin's name or
    an :class:`~rnnzoo.Activation`); ``device`` defaults to CUDA when available.
    The rules (:data:`rnnzoo.cellrules.RULES`), on small float64 instances:

    * ``construct``: ``factory(input_size, hidden_size, [activation], **settings)``
      builds a Cell that knows its sizes and has a ``state_layout``;
    * ``step``, ``state``, ``output``: one step returns ``(output, state)``, the
      state a tuple of ``len(state_layout)`` tensors ``[B, hidden_size]``, the
      output ``[B, output_size]``; ``dtype-device``: both follow the input;
    * ``padding``: in a padded batch (``rnnzoo.recurrence.step_loop`` with
      lengths) each sequence computes what it computes alone;
    * ``forward-sequence``: a fast path that returns something equals the step
      loop, outputs and gradients, with and without padding;
    * ``project-input``: step t of the projection depends on step t's input only;
    * ``gradcheck``: ``torch.autograd.gradcheck`` over three steps, with respect to
      the input, the initial state and every parameter;
    * ``recurrent-weights``: each matrix multiplies the previous state (the step
      does not depend on it at a zero state, and its Jacobian does at another);
    * ``activation``: the injected activation is called and its result used;
    * ``state-dict``: a fresh instance loading the state dict computes the same.
    """
    results = cell_contract(factory, name=name, activation=activation, device=device, **settings)
    if any(r.passed is False for r in results):
        raise CellContractError(describe(factory, name), results)
    return results
