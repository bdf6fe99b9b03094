"""The rules of the cell contract on its fast paths and gradients: forward_sequence
equals the step loop, project_input is time-local, and autograd agrees with finite
differences (run by :mod:`rnnzoo.cellcheck`; the table is in :mod:`rnnzoo.cellrules`)."""

from __future__ import annotations

import itertools
import re

import torch
from torch import Tensor, nn
from torch.autograd.gradcheck import GradcheckError

from rnnzoo.cell import Cell, State
from rnnzoo.cellcheck import RuleFailure, RuleSkipped, Subject, close, gap
from rnnzoo.recurrence import step_loop


def _loss_inputs(cell: Cell, x: Tensor, initial: State) -> list[Tensor]:
    return [x, *initial, *(p for p in cell.parameters() if p.requires_grad)]


def _with_grads(result: tuple[Tensor, State], inputs: list[Tensor]) -> list[Tensor]:
    """Outputs, final state and the gradients of a fixed random loss over both."""
    out, final = result
    g = torch.Generator().manual_seed(1)
    loss = torch.stack(
        [
            (t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t)).sum()
            for t in (out, *final)
        ]
    ).sum()
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [out.detach(), *(f.detach() for f in final)] + [
        torch.zeros_like(i) if g is None else g for i, g in zip(inputs, grads, strict=True)
    ]


def forward_sequence(s: Subject) -> str:
    cell = s.build()
    x, initial = s.inputs(cell)
    x.requires_grad_(True)
    for t in initial:
        t.requires_grad_(True)
    inputs = _loss_inputs(cell, x, initial)
    names = ["x", *(f"initial '{n}'" for n in cell.state_layout)]
    names += [n for n, p in cell.named_parameters() if p.requires_grad]
    checked = []
    for label, lengths in (("full", None), ("padded", s.lengths())):
        with torch.enable_grad():
            fast = cell.forward_sequence(x, initial, lengths)
            if fast is None:
                continue
            if not isinstance(fast, tuple) or len(fast) != 2:
                raise RuleFailure(
                    f"forward_sequence returned {type(fast).__name__}, not (outputs, state)"
                )
            got = _with_grads(fast, inputs)
            out, final, _ = step_loop(cell, x, initial, lengths, False)
            slow = _with_grads((out, final), inputs)
        what = ["outputs", *(f"final '{n}'" for n in cell.state_layout)]
        what += [f"d/d {n}" for n in names]
        for name, a, b in zip(what, got, slow, strict=True):
            if not close(a, b):
                raise RuleFailure(
                    f"forward_sequence ({label} batch) disagrees with the step loop: {name} "
                    f"differs {gap(a, b)}"
                )
        checked.append(label)
    if not checked:
        raise RuleSkipped("forward_sequence returns None here: the step loop runs")
    return f"equals the step loop, outputs and gradients ({' and '.join(checked)} batches)"


def project_input(s: Subject) -> str:
    cell = s.build()
    if type(cell).project_input is Cell.project_input:
        raise RuleSkipped("project_input is the identity")
    x, _ = s.inputs(cell)
    whole = cell.project_input(x)
    if whole.shape[:2] != x.shape[:2]:
        raise RuleFailure(
            f"project_input maps {tuple(x.shape)} to {tuple(whole.shape)}; it must keep [batch, steps]"
        )
    for t in range(x.shape[1]):
        alone = cell.project_input(x[:, t : t + 1])[:, 0]
        if not close(alone, whole[:, t]):
            raise RuleFailure(
                f"project_input of step {t} alone differs from step {t} of the whole sequence "
                f"{gap(alone, whole[:, t])}: it must act on each step separately (truncated "
                "BPTT windows would change the model)"
            )
    for row, at in itertools.product(range(x.shape[0]), range(x.shape[1])):
        nudged = x.clone()
        nudged[row, at] += s.randn(x.shape[-1])
        change = (cell.project_input(nudged) - whole).abs()
        moved = (change > 1e-12 * (1 + whole.abs())).flatten(2).any(-1)
        moved[row, at] = False
        if bool(moved.any()):
            other_row, other_step = moved.nonzero()[0].tolist()
            where = f"step {other_step}" if other_row == row else f"sequence {other_row}"
            raise RuleFailure(
                f"changing the input at step {at} changes the projected input at {where}: "
                "project_input must be time-local (and act on each sequence alone)"
            )
    return "time-local: step t of the projection depends on the input at step t only"


class _Unrolled(nn.Module):
    """The step loop over a whole sequence, as one module for functional_call."""

    def __init__(self, cell: Cell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        out, final, _ = step_loop(self.cell, x, tuple(state), None, False)
        return (out, *final)


def gradcheck(s: Subject) -> str:
    cell = s.build(sizes=(2, 3))
    x, initial = s.inputs(cell, batch=2, steps=3)
    unrolled = _Unrolled(cell)
    named = [(n, p) for n, p in unrolled.named_parameters() if p.requires_grad]
    leaves = [
        t.detach().clone().requires_grad_(True) for t in (x, *initial, *(p for _, p in named))
    ]
    count = 1 + len(initial)

    def run(*values: Tensor) -> tuple[Tensor, ...]:
        params = {n: v for (n, _), v in zip(named, values[count:], strict=True)}
        return torch.func.functional_call(unrolled, params, values[:count])

    try:
        torch.autograd.gradcheck(run, tuple(leaves))
    except GradcheckError as exc:
        labels = [
            "x",
            *(f"initial '{n}'" for n in cell.state_layout),
            *(n.removeprefix("cell.") for n, _ in named),
        ]
        first = str(exc).strip().splitlines()[0].rstrip(",")
        found = re.search(r"output (\d+) with respect to input (\d+)", first)
        if found:
            out_labels = ["outputs", *(f"final '{n}'" for n in cell.state_layout)]
            first = f"d {out_labels[int(found[1])]} / d {labels[int(found[2])]} is wrong"
        raise RuleFailure(
            f"autograd's gradient disagrees with finite differences: {first} (a custom "
            "backward, a detach or an in-place change in the step?)"
        ) from None
    return f"torch.autograd.gradcheck over 3 steps, wrt the input, the initial state and {len(named)} parameter(s)"
