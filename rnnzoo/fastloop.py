"""A faster generic step loop: the reference loop's maths with a cheaper backward.

:func:`rnnzoo.recurrence.step_loop` reads step ``t`` of the projected inputs as
``projected[:, t]``. Autograd turns each such read into a ``SelectBackward`` node
whose gradient is a zero-filled tensor the size of the *whole* sequence, summed
into the others: the backward pass writes ``T`` full-size tensors, quadratic in
the sequence length. :func:`fast_step_loop` takes the steps with one
``unbind``, whose single backward node stacks the ``T`` step gradients once.
Everything else (the cell calls, padding, recorded states) is the reference loop
unchanged, so outputs and gradients agree with it to float rounding
(tests/test_fastloop.py).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnzoo.cell import Cell, State
from rnnzoo.recurrent_linear import deferred_weight_grads


def fast_step_loop(
    cell: Cell, x: Tensor, state: State, lengths: Tensor | None, record: bool
) -> tuple[Tensor, State, list[State]]:
    """Drop-in for :func:`rnnzoo.recurrence.step_loop`: same arguments, same results.

    Padded steps (``t >= lengths[b]``) leave the state unchanged and output zeros.
    """
    steps = x.shape[1]
    inputs = cell.project_input(x).unbind(1)
    real_until = steps if lengths is None else int(lengths.min())
    real_steps: tuple[Tensor, ...] = ()
    if lengths is not None:
        positions = torch.arange(steps, device=x.device)
        real_steps = (positions[:, None, None] < lengths.to(x.device)[None, :, None]).unbind(0)
    outputs: list[Tensor] = []
    recorded: list[State] = []
    with deferred_weight_grads():
        for t, x_t in enumerate(inputs):
            output, new_state = cell(x_t, state)
            if t >= real_until:
                real = real_steps[t]
                masked = tuple(
                    torch.where(real, n, s) for n, s in zip(new_state, state, strict=True)
                )
                output = output.masked_fill(~real, 0.0)
                new_state = masked
            state = new_state
            outputs.append(output)
            if record:
                recorded.append(state)
    return torch.stack(outputs, 1), state, recorded
