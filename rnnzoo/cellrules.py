"""The rules of the cell contract, one function each, and :data:`RULES`, their table
(run by :mod:`rnnzoo.cellcheck`; the fast-path and gradient rules are in
:mod:`rnnzoo.cellpaths`, the recurrent-weights rule in :mod:`rnnzoo.cellweights`).

A rule takes the :class:`~rnnzoo.cellcheck.Subject`, returns a line saying what it
checked, and raises :class:`~rnnzoo.cellcheck.RuleFailure` (broken) or
:class:`~rnnzoo.cellcheck.RuleSkipped` (does not apply).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from rnnzoo.activation import Activation
from rnnzoo.cell import Cell, State
from rnnzoo.cellcheck import (
    BATCH,
    HIDDEN,
    INPUT,
    LENGTHS,
    STEPS,
    ProbeActivation,
    RuleFailure,
    RuleSkipped,
    Subject,
    close,
    gap,
)
from rnnzoo.cellpaths import forward_sequence, gradcheck, project_input
from rnnzoo.cellweights import recurrent_weights_rule
from rnnzoo.recurrence import step_loop

FIX = "Return (output, state) with state a tuple, as docs/writing-a-plugin.md shows."


def construct(s: Subject) -> str:
    try:
        cell = s.build()
    except TypeError as exc:
        raise RuleFailure(
            f"building it raised TypeError: {exc}. Give the settings it needs: "
            "check_cell(cls, key=value), or rnnzoo check-cell NAME key=value"
        ) from None
    if (cell.input_size, cell.hidden_size) != (INPUT, HIDDEN):
        raise RuleFailure(
            f"built with input_size {INPUT} and hidden_size {HIDDEN}, it reports {cell.input_size} and "
            f"{cell.hidden_size}: pass both to Cell.__init__"
        )
    layout = cell.state_layout
    if not (isinstance(layout, tuple) and layout and all(isinstance(n, str) for n in layout)):
        raise RuleFailure(f"state_layout is {layout!r}; it must be a non-empty tuple of names")
    given = ", ".join(f"{k}={v!r}" for k, v in s.settings.items())
    return f"{type(cell).__name__}({INPUT}, {HIDDEN}{', activation' * s.takes_activation}{', ' * bool(given)}{given})"


def _first_step(s: Subject, dtype: torch.dtype | None = None) -> tuple[Cell, State, Any]:
    """A fresh cell, its initial state and what its first step returned."""
    cell = s.build(dtype=dtype)
    x = s.randn(BATCH, STEPS, cell.input_size, dtype=dtype)
    state = cell.initial_state(BATCH, s.device, dtype or s.dtype)
    with torch.no_grad():
        return cell, state, cell(cell.project_input(x)[:, 0], state)


def step(s: Subject) -> str:
    _, _, result = _first_step(s)
    if not isinstance(result, tuple) or len(result) != 2:
        got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
        raise RuleFailure(f"forward returned {got}; it must return (output, new_state). {FIX}")
    return "forward(x_t, state) returns (output, new_state)"


def state(s: Subject) -> str:
    cell, initial, (_, new) = _first_step(s)
    expected = (BATCH, cell.hidden_size)
    layout = cell.state_layout
    for what, value in (("initial_state()", initial), ("forward's new state", new)):
        if not isinstance(value, tuple) or len(value) != len(layout):
            got = type(value).__name__
            got += f" of {len(value)}" if isinstance(value, tuple) else ""
            raise RuleFailure(
                f"{what} is a {got}; the state is a tuple of {len(layout)} tensor(s), one per "
                f"name in state_layout {layout}. {FIX}"
            )
        for name, part in zip(layout, value, strict=True):
            if not isinstance(part, Tensor) or tuple(part.shape) != expected:
                shape = tuple(part.shape) if isinstance(part, Tensor) else type(part).__name__
                raise RuleFailure(
                    f"{what} '{name}' has shape {shape}; it must be {expected} "
                    "([batch, hidden_size])"
                )
    return f"a tuple of {len(layout)} [batch, hidden_size] tensor(s) {layout}"


def output(s: Subject) -> str:
    cell, _, (out, _) = _first_step(s)
    expected = (BATCH, cell.output_size)
    if not isinstance(out, Tensor) or tuple(out.shape) != expected:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise RuleFailure(
            f"the output has shape {shape}; it must be {expected} ([batch, output_size])"
        )
    return "[batch, output_size]"


def dtype_device(s: Subject) -> str:
    for dtype in (torch.float32, torch.float64):
        cell, initial, (out, new) = _first_step(s, dtype)
        named = [("output", out)]
        named += [(f"new state '{n}'", t) for n, t in zip(cell.state_layout, new, strict=True)]
        named += [
            (f"initial state '{n}'", t) for n, t in zip(cell.state_layout, initial, strict=True)
        ]
        for what, t in named:
            if t.dtype != dtype or t.device.type != s.device.type:
                raise RuleFailure(
                    f"with {dtype} inputs on {s.device.type}, the {what} is {t.dtype} on "
                    f"{t.device.type}: create tensors with the input's dtype and device "
                    "(torch.zeros_like, x.new_zeros)"
                )
    return f"float32 and float64 on {s.device.type} stay so"


def padding(s: Subject) -> str:
    cell = s.build()
    x, initial = s.inputs(cell)
    with torch.no_grad():
        out, final, _ = step_loop(cell, x, initial, s.lengths(), False)
        for b, length in enumerate(LENGTHS):
            if bool(out[b, length:].any()):
                raise RuleFailure(
                    f"a sequence of length {length} has nonzero outputs after its end"
                )
            if length == 0:
                alone: State = tuple(c[b : b + 1] for c in initial)
                short = out[b : b + 1, :0]
            else:
                row = tuple(c[b : b + 1] for c in initial)
                short, alone, _ = step_loop(cell, x[b : b + 1, :length], row, None, False)
            for name, got, want in zip(cell.state_layout, final, alone, strict=True):
                if not close(got[b : b + 1], want):
                    raise RuleFailure(
                        f"the final state '{name}' of a sequence of length {length} in a padded "
                        f"batch differs from running it alone {gap(got[b : b + 1], want)}: the "
                        "cell mixes the sequences of a batch or changes the state in place"
                    )
            if not close(out[b : b + 1, :length], short):
                raise RuleFailure(
                    f"the outputs of a sequence of length {length} depend on the rest of the batch"
                )
    return f"lengths {list(LENGTHS)}: each sequence as if alone; padded steps keep the state"


def activation(s: Subject) -> str:
    probe = ProbeActivation()
    cell = s.build(activation=probe) if s.takes_activation else s.build()
    probes = [m for m in cell.modules() if isinstance(m, Activation)]
    if not probes:
        raise RuleSkipped(
            "takes no activation and holds no Activation module: gradflow/act_deriv_mean "
            "and act_zero_frac are not logged"
        )
    x, initial = s.inputs(cell)
    for p in probes:
        p.recorded = []
    try:
        with torch.no_grad():
            before = step_loop(cell, x, initial, None, False)[0]
    finally:
        seen = {type(p).__name__ for p in probes if p.recorded}
        for p in probes:
            p.recorded = None
    if not s.takes_activation:
        if not seen:
            raise RuleFailure("holds Activation modules but never calls them")
        return f"calls its own activation module(s) ({', '.join(sorted(seen))})"
    if not seen:
        raise RuleFailure(
            "never calls the activation it was given: call self.activation(z), not torch.tanh(z), "
            "so that model.activation takes effect and gradflow logs act_deriv_mean"
        )
    probe.scale = 0.5
    with torch.no_grad():
        after = step_loop(cell, x, initial, None, False)[0]
    if torch.equal(before, after):
        raise RuleFailure("calls the activation it was given but its output ignores the result")
    return "calls the activation it was given, and its result shapes the output"


def state_dict(s: Subject) -> str:
    first, second = s.build(seed=1), s.build(seed=2)
    second.load_state_dict(first.state_dict())
    x, initial = s.inputs(first)
    with torch.no_grad():
        a = step_loop(first, x, initial, None, False)
        b = step_loop(second, x, initial, None, False)
    for name, u, v in zip(
        ["outputs", *first.state_layout], [a[0], *a[1]], [b[0], *b[1]], strict=True
    ):
        if not torch.equal(u, v):
            raise RuleFailure(
                f"a fresh instance loading the state dict gives other {name} ({gap(u, v)}): keep "
                "everything the step uses in parameters or (persistent) buffers"
            )
    return "a fresh instance that loads the state dict computes the same"


RULES: dict[str, Callable[[Subject], str]] = {
    "construct": construct,
    "step": step,
    "state": state,
    "output": output,
    "dtype-device": dtype_device,
    "padding": padding,
    "forward-sequence": forward_sequence,
    "project-input": project_input,
    "gradcheck": gradcheck,
    "recurrent-weights": recurrent_weights_rule,
    "activation": activation,
    "state-dict": state_dict,
}
BASIC = ("construct", "step", "state", "output", "dtype-device")
#: the rules each rule needs to have passed before it can run
NEEDS: dict[str, tuple[str, ...]] = {
    "construct": (),
    "step": ("construct",),
    "state": ("step",),
    "output": ("step",),
    "dtype-device": ("state", "output"),
    **{rule: BASIC for rule in RULES if rule not in BASIC},
}
