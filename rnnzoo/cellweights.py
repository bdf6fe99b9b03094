"""The recurrent-weights rule of the cell contract: every matrix a cell names in
``recurrent_weights()`` multiplies the previous state (``sigma_max`` is read from
them, so a wrong one gives a wrong statistic)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnzoo.cell import Cell, State
from rnnzoo.cellcheck import RuleFailure, RuleSkipped, Subject


def sources(cell: Cell, weight: Tensor) -> list[tuple[str, nn.Parameter]]:
    """The parameters ``weight`` is, or is computed from (a parametrization's
    ``original``, the vector of a diagonal matrix)."""
    params = [(n, p) for n, p in cell.named_parameters() if p.requires_grad]
    same = [(n, p) for n, p in params if p is weight]
    same = same or [
        (n, p) for n, p in params if p.data_ptr() == weight.data_ptr() and p.shape == weight.shape
    ]
    if same or weight.grad_fn is None or not params:
        return same
    probe = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)).to(weight)
    grads = torch.autograd.grad((weight * probe).sum(), [p for _, p in params], allow_unused=True)
    return [
        (n, p) for (n, p), g in zip(params, grads, strict=True) if g is not None and bool(g.any())
    ]


def _step_jacobian(cell: Cell, x: Tensor, state: State) -> Tensor:
    """``d new_state / d state`` for every component, flattened into one matrix."""

    def new_state(*prev: Tensor) -> Tensor:
        _, new = cell(cell.project_input(x)[:, 0], prev)
        return torch.cat([t.reshape(-1) for t in new])

    parts = torch.autograd.functional.jacobian(new_state, state)
    return torch.cat([p.reshape(p.shape[0], -1) for p in parts], 1)


def recurrent_weights_rule(s: Subject) -> str:
    cell = s.build()
    x, state = s.inputs(cell, steps=1)
    zero = tuple(torch.zeros_like(c) for c in state)
    with torch.enable_grad():
        weights = cell.recurrent_weights()
    if not isinstance(weights, dict):
        raise RuleFailure(f"recurrent_weights() returned {type(weights).__name__}, not a dict")
    if not weights:
        raise RuleSkipped("recurrent_weights() is empty: gradflow/sigma_max is not logged")
    for name, weight in weights.items():
        if not isinstance(weight, Tensor) or weight.dim() != 2:
            got = (
                f"shape {tuple(weight.shape)}"
                if isinstance(weight, Tensor)
                else type(weight).__name__
            )
            raise RuleFailure(
                f"'{name}' has {got}; it must be a matrix (gradflow takes its largest singular "
                "value; return torch.diag(u) for a diagonal recurrence)"
            )
        found = sources(cell, weight)
        if not found:
            raise RuleFailure(f"'{name}' is not a parameter of the cell, nor computed from one")
        with torch.enable_grad():
            out, new = cell(cell.project_input(x)[:, 0], zero)
            loss = torch.stack([(t * s.randn(*t.shape)).sum() for t in (out, *new)]).sum()
            grads = torch.autograd.grad(loss, [p for _, p in found], allow_unused=True)
        if any(g is not None and bool(g.any()) for g in grads):
            raise RuleFailure(
                f"'{name}' does not only multiply the previous state: with a zero previous state "
                "the step still depends on it (an input weight or a bias?)"
            )
        before = _step_jacobian(cell, x, state)
        with torch.no_grad():
            saved = [p.clone() for _, p in found]
            for _, p in found:
                p.add_(0.5 * s.randn(*p.shape))
        try:
            after = _step_jacobian(cell, x, state)
        finally:
            with torch.no_grad():
                for (_, p), old in zip(found, saved, strict=True):
                    p.copy_(old)
        if torch.equal(before, after):
            raise RuleFailure(
                f"'{name}' does not multiply the previous state: changing it leaves d state_t / "
                "d state_t-1 as it was"
            )
    return f"{', '.join(weights)}: each multiplies the previous state"
