"""Reference implementations for tests and cell authors.

Nothing here runs in training. These are the plainest correct versions of what
the engine does faster; tests check the engine against them, and a cell author
can do the same with a new cell.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnzoo.cell import Cell, State


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
