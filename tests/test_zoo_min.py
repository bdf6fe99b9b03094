"""minGRU and minLSTM (Feng et al. 2024) against the papers' sequential algorithm,
and their log-space scan (Heinsen 2023) against the step loop: outputs, final
states and gradients, with and without padding."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from rnnzoo.recurrence import Recurrence, step_loop
from rnnzoo.testing import check_cell
from rnnzoo_plugins.cells.mingru import MinGRUCell
from rnnzoo_plugins.cells.minlstm import MinLSTMCell

EXACT = {"rtol": 1e-12, "atol": 1e-12}
F64 = torch.float64
B, T, I, H = 4, 9, 3, 5  # noqa: E741
CELLS = {"mingru": MinGRUCell, "minlstm": MinLSTMCell}


def g(v: Tensor) -> Tensor:
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def data(seed: int, steps: int = T, dtype: torch.dtype = F64) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, steps, I, generator=gen, dtype=dtype),
        torch.randn(B, H, generator=gen, dtype=dtype),  # negative entries too
    )


def test_mingru_follows_the_papers_sequential_algorithm() -> None:
    torch.manual_seed(0)
    cell = MinGRUCell(I, H).double()
    x, h = data(0)
    out, (h_end,), _ = step_loop(cell, x, (h,), None, False)
    W, b = cell.linear.weight.detach(), cell.linear.bias.detach()
    for t in range(T):
        k, v = (x[:, t] @ W.T + b).split(H, dim=1)
        z = torch.sigmoid(k)
        h = (1 - z) * h + z * g(v)
        torch.testing.assert_close(out[:, t], h, **EXACT)
    torch.testing.assert_close(h_end, h, **EXACT)


def test_minlstm_follows_the_papers_sequential_algorithm() -> None:
    torch.manual_seed(1)
    cell = MinLSTMCell(I, H).double()
    x, h = data(1)
    out, _, _ = step_loop(cell, x, (h,), None, False)
    W, b = cell.linear.weight.detach(), cell.linear.bias.detach()
    for t in range(T):
        k_f, k_i, v = (x[:, t] @ W.T + b).split(H, dim=1)
        f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
        h = f / (f + i) * h + i / (f + i) * g(v)
        torch.testing.assert_close(out[:, t], h, **EXACT)
    # the normalised gates sum to one at every step
    f_n, i_n, _ = cell.project_input(x).split(H, dim=-1)
    torch.testing.assert_close(f_n + i_n, torch.ones_like(f_n), **EXACT)


def run(cell: MinGRUCell | MinLSTMCell, x: Tensor, h: Tensor, lengths: Tensor | None, scan: bool):
    """Outputs, final state and the gradients of a loss over both."""
    x, h = x.clone().requires_grad_(True), h.clone().requires_grad_(True)
    if scan:
        result = cell.forward_sequence(x, (h,), lengths)
        assert result is not None
        out, (final,) = result
    else:
        out, (final,), _ = step_loop(cell, x, (h,), lengths, False)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    loss = (out * weights).sum() + final.pow(2).sum()
    grads = torch.autograd.grad(loss, [x, h, *cell.parameters()])
    return [out, final, *grads]


@pytest.mark.parametrize("padded", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("name", list(CELLS))
def test_the_scan_equals_the_step_loop_in_float64(name: str, padded: bool) -> None:
    torch.manual_seed(2)
    cell = CELLS[name](I, H, scan="always").double()
    x, h = data(2, steps=64)
    lengths = torch.tensor([64, 30, 1, 0]) if padded else None
    for got, want in zip(
        run(cell, x, h, lengths, True), run(cell, x, h, lengths, False), strict=True
    ):
        assert float((got - want).detach().abs().max()) <= 1e-10


@pytest.mark.parametrize("name", list(CELLS))
def test_the_float32_scan_stays_within_its_documented_bound(name: str) -> None:
    """The scan's float32 error grows with the length (docs/cells.md): about 3e-4
    at T = 2048 where the step loop's is 1e-5; the bound here leaves room."""
    torch.manual_seed(3)
    cell = CELLS[name](I, H, scan="always")
    exact = CELLS[name](I, H).double()
    exact.load_state_dict(cell.state_dict())
    x, h = data(3, steps=2048, dtype=torch.float32)
    with torch.no_grad():
        scanned = cell.forward_sequence(x, (h,), None)
        reference = step_loop(exact, x.double(), (h.double(),), None, False)[0]
    assert scanned is not None
    assert float((scanned[0].double() - reference).abs().max()) <= 2e-3


@pytest.mark.parametrize("name", list(CELLS))
def test_the_scan_runs_where_it_is_faster(name: str) -> None:
    x, h = data(4, dtype=torch.float32)
    assert CELLS[name](I, H).forward_sequence(x, (h,), None) is None  # auto on a CPU
    assert CELLS[name](I, H, scan="never").forward_sequence(x, (h,), None) is None
    assert CELLS[name](I, H, scan="always").forward_sequence(x, (h,), None) is not None


@pytest.mark.parametrize("name", list(CELLS))
def test_the_scan_runs_in_a_recurrence_and_keeps_the_contract(name: str) -> None:
    torch.manual_seed(5)
    fused = Recurrence(lambda i, h: CELLS[name](i, h, scan="always"), I, H, num_layers=2)
    loop = Recurrence(lambda i, h: CELLS[name](i, h, scan="always"), I, H, 2, fused=False)
    loop.load_state_dict(fused.state_dict())
    x, _ = data(5, dtype=torch.float32)
    lengths = torch.tensor([T, 4, 2, 7])
    torch.testing.assert_close(fused(x, lengths).outputs, loop(x, lengths).outputs)
    results = check_cell(CELLS[name], scan="always")
    assert next(r for r in results if r.rule == "forward-sequence").passed
