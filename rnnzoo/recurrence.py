"""The recurrence engine: any cell, over time, layers and directions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnnzoo.cell import Cell, State
from rnnzoo.errors import DataError, PluginError, UsageError

#: runs a cell over a whole sequence ``(cell, x, state, lengths)``, or returns None
StepRunner = Callable[[Cell, Tensor, State, "Tensor | None"], "tuple[Tensor, State] | None"]


@dataclass
class RecurrenceOutput:
    """What a pass of the recurrence produced.

    ``outputs`` is ``[B, T, directions * output_size]`` (forward features first),
    zero at padded steps. ``final_state[layer * directions + d]`` is each sequence's
    state after its last real step. ``step_states`` (only when asked for) holds, per
    layer and direction, the state of every step in processing order (all its
    components: ``(h_t, c_t)`` for an LSTM): graph tensors, so ``autograd.grad(loss,
    h_t)`` is the total derivative ``dL/dh_t`` through the recurrence.
    """

    outputs: Tensor
    final_state: list[State]
    step_states: list[list[State]] | None = None


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x [B, T, ...]`` within its true length."""
    if lengths is None:
        return x.flip(1)
    steps = x.shape[1]
    t = torch.arange(steps, device=x.device)[None, :]
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(t < lengths, lengths - 1 - t, t)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


def step_loop(
    cell: Cell, x: Tensor, state: State, lengths: Tensor | None, record: bool
) -> tuple[Tensor, State, list[State]]:
    """Run ``cell`` over ``x [B, T, input_size]`` one step at a time: one call of
    ``cell.forward`` per step on the output of ``cell.project_input``.

    Returns the outputs ``[B, T, output_size]``, the final state and, with
    ``record``, the state after every step. Padded steps (``t >= lengths[b]``)
    leave the state unchanged and output zeros.

    The steps are taken with one ``unbind``: its single backward node stacks the
    ``T`` step gradients once, where indexing ``projected[:, t]`` would make every
    step's backward write a zero-filled gradient of the whole sequence (quadratic
    in ``T``). :func:`rnnzoo.testing.reference_step_loop` is the indexing version,
    which tests compare this loop with.
    """
    inputs = cell.project_input(x).unbind(1)
    real_until, real = padding(lengths, x.shape[1], x.device)
    outputs: list[Tensor] = []
    recorded: list[State] = []
    for t, x_t in enumerate(inputs):
        output, new_state = cell(x_t, state)
        if t == 0:
            check_step(cell, output, new_state, state)
        if t >= real_until:  # some sequences have ended
            assert real is not None
            output, new_state = padded_step(real[t], output, new_state, state)
        state = new_state
        outputs.append(output)
        if record:
            recorded.append(state)
    return torch.stack(outputs, 1), state, recorded


def padded_step(
    real: Tensor, output: Tensor, new_state: State, state: State
) -> tuple[Tensor, State]:
    """A step's output and new state where the sequences at which ``real``
    (``[B, 1]`` booleans) is false have ended: they keep ``state`` and output zeros."""
    kept = tuple(torch.where(real, n, s) for n, s in zip(new_state, state, strict=True))
    return output.masked_fill(~real, 0.0), kept


def check_step(cell: Cell, output: object, new_state: object, state: State) -> None:
    """The first step of a cell keeps the contract: its output is ``[B,
    output_size]`` and its new state a tuple shaped like the state it was given
    (one ``[B, hidden_size]`` tensor per name in ``state_layout``)."""
    kind = type(cell)
    where = f"Cell {kind.__name__} ({kind.__module__})"
    fix = "Return (output, state) with state a tuple, as docs/writing-a-plugin.md shows."
    if not isinstance(new_state, tuple) or len(new_state) != len(state):
        got = type(new_state).__name__
        got += f" of {len(new_state)}" if isinstance(new_state, tuple) else ""
        raise PluginError(
            f"{where} returned a {got} as its new state; the state is a tuple of "
            f"{len(state)} tensor(s), one per name in state_layout {cell.state_layout}. {fix}"
        )
    for name, new, old in zip(cell.state_layout, new_state, state, strict=False):
        if not isinstance(new, Tensor) or new.shape != old.shape:
            shape = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
            raise PluginError(
                f"{where} returned state '{name}' of shape {shape}; it must keep the "
                f"shape {tuple(old.shape)} of the state it was given ([batch, "
                f"hidden_size]). {fix}"
            )
    expected = (state[0].shape[0], cell.output_size)
    if not isinstance(output, Tensor) or tuple(output.shape) != expected:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise PluginError(
            f"{where} returned an output of shape {shape}; it must be {expected} ([batch, "
            f"output_size]). {fix}"
        )


def step_mask(lengths: Tensor, steps: int, device: torch.device) -> Tensor:
    """``[B, steps]`` booleans, true at real steps."""
    return torch.arange(steps, device=device)[None, :] < lengths.to(device)[:, None]


def padding(lengths: Tensor | None, steps: int, device: torch.device) -> tuple[int, Tensor | None]:
    """For a step loop: the first step at which some sequence has ended (``steps``
    when none has) and the time-major mask of real steps, ``[steps, B, 1]``
    booleans (None without ``lengths``)."""
    if lengths is None:
        return steps, None
    return int(lengths.min()), step_mask(lengths, steps, device).T[..., None]


class Recurrence(nn.Module):
    """Runs cells over a batch-first sequence: stacked layers, optional backward
    direction, variable lengths, initial state in and final state out.

    Each layer and direction has its own cell, built by ``make_cell(input_size,
    hidden_size)``. A cell's :meth:`~rnnzoo.cell.Cell.forward_sequence` (the
    built-in cells' fused kernels) runs when ``fused`` is true and no per-step
    states are requested. Where it does not run or returns ``None``, ``compiled`` (a
    :class:`rnnzoo.compiled_loop.CompiledLoop`, ``model.compile``) runs when given
    and no per-step states are requested; otherwise, or where that returns ``None``,
    :func:`step_loop`.
    """

    def __init__(
        self,
        make_cell: Callable[[int, int], Cell],
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        fused: bool = True,
        compiled: StepRunner | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.fused = fused
        self.compiled = compiled
        cells: list[Cell] = []
        size = input_size
        for _ in range(num_layers):
            layer = [make_cell(size, hidden_size) for _ in range(self.directions)]
            cells.extend(layer)
            size = layer[0].output_size * self.directions
        self.cells = nn.ModuleList(cells)
        self.output_size = size

    def cell(self, layer: int, direction: int = 0) -> Cell:
        cell = self.cells[layer * self.directions + direction]
        assert isinstance(cell, Cell)
        return cell

    def initial_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> list[State]:
        return [c.initial_state(batch_size, device, dtype) for c in self.cells]  # type: ignore[operator]

    @staticmethod
    def _check_lengths(lengths: Tensor, x: Tensor) -> Tensor | None:
        """``lengths``, or ``None`` where every sequence fills all steps."""
        steps = x.shape[1]
        if lengths.shape != (x.shape[0],):
            raise DataError(
                f"Sequence lengths have shape {tuple(lengths.shape)}, but the batch holds "
                f"{x.shape[0]} sequences: the task must give one length per sequence."
            )
        low, high = torch.stack(torch.aminmax(lengths)).tolist()
        if low < 0 or high > steps:
            raise DataError(
                f"Sequence lengths range from {low} to {high}, outside [0, {steps}] for a "
                f"batch of {steps} steps: the task's lengths do not fit its inputs."
            )
        return None if low == steps else lengths

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        state: list[State] | None = None,
        return_states: bool = False,
    ) -> RecurrenceOutput:
        if state is None:
            state = self.initial_state(x.shape[0], x.device, x.dtype)
        elif len(state) != len(self.cells):
            raise UsageError(
                f"The initial state has {len(state)} entries, but this recurrence has "
                f"{len(self.cells)} (layers x directions): pass the final_state of a model "
                "with the same num_layers and bidirectional, or None."
            )
        lengths = None if lengths is None else self._check_lengths(lengths, x)
        if lengths is not None:
            # whatever the padding holds (even NaN) must not reach a real step or gradient
            x = x.masked_fill(~step_mask(lengths, x.shape[1], x.device)[..., None], 0.0)
        final: list[State] = []
        recorded: list[list[State]] = []
        layer_input = x
        cells = list(self.cells)
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout is not None:
                layer_input = self.dropout(layer_input)
            outputs = []
            for d in range(self.directions):
                index = layer * self.directions + d
                cell = cells[index]
                assert isinstance(cell, Cell)
                seq = layer_input if d == 0 else reverse_padded(layer_input, lengths)
                result = None
                if self.fused and not return_states:
                    result = cell.forward_sequence(seq, state[index], lengths)
                if result is None and self.compiled is not None and not return_states:
                    result = self.compiled(cell, seq, state[index], lengths)
                if result is None:
                    out, last, steps = step_loop(cell, seq, state[index], lengths, return_states)
                else:
                    (out, last), steps = result, []
                outputs.append(out if d == 0 else reverse_padded(out, lengths))
                final.append(last)
                recorded.append(steps)
            layer_input = outputs[0] if self.directions == 1 else torch.cat(outputs, -1)
        return RecurrenceOutput(layer_input, final, recorded if return_states else None)
