"""The Elman-like cells of the zoo (IndRNN, UGRNN, expRNN, AntisymmetricRNN, coRNN)
against independent implementations of their papers' equations (float64, step by
step) and the properties the papers build them for."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

import rnnzoo
from rnnzoo.recurrence import step_loop
from rnnzoo_plugins.activations import Identity, ReLU, Tanh
from rnnzoo_plugins.cells.antisymmetric_rnn import AntisymmetricRNNCell
from rnnzoo_plugins.cells.cornn import CoRNNCell
from rnnzoo_plugins.cells.exprnn import ExpRNNCell
from rnnzoo_plugins.cells.indrnn import IndRNNCell
from rnnzoo_plugins.cells.ugrnn import UGRNNCell

EXACT = {"rtol": 1e-12, "atol": 1e-12}
F64 = torch.float64
B, T, I, H = 3, 7, 4, 5  # noqa: E741


def data(seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, I, generator=g, dtype=F64), torch.randn(B, H, generator=g, dtype=F64)


def params(cell: nn.Module) -> dict[str, Tensor]:
    return {n: p.detach() for n, p in cell.named_parameters()}


def test_indrnn_follows_li_et_al_and_its_units_are_independent() -> None:
    torch.manual_seed(0)
    cell = IndRNNCell(I, H, ReLU()).double()
    x, h = data()
    out, (h_end,), _ = step_loop(cell, x, (h,), None, False)
    p = params(cell)
    for t in range(T):
        h = torch.relu(x[:, t] @ p["weight_ih"].T + p["bias"] + p["u"] * h)
        torch.testing.assert_close(out[:, t], h, **EXACT)
    # each unit sees only its own past: d h'_j / d h_k = 0 for j != k
    jac = torch.autograd.functional.jacobian(
        lambda s: cell(cell.project_input(x)[:1, 0], (s,))[1][0], h[:1]
    )[0, :, 0, :]
    assert torch.equal(jac, torch.diag(torch.diagonal(jac)))
    assert cell.recurrent_weights()["u"].shape == (H, H)


def test_indrnn_keeps_u_within_its_bound_in_the_step_and_in_training(tmp_path: Path) -> None:
    cell = IndRNNCell(I, H, ReLU(), recurrent_max=0.5, recurrent_init=2.0).double()
    assert float(cell.u.detach().abs().max()) <= 0.5  # clipped at the start
    with torch.no_grad():
        cell.u.fill_(3.0)  # as an optimizer step might leave it
    x, h = data(1)
    with torch.no_grad():
        stepped = cell(cell.project_input(x)[:, 0], (h,))[0]
        clipped = torch.relu(cell.project_input(x)[:, 0] + 0.5 * h)
    torch.testing.assert_close(stepped, clipped, **EXACT)

    # rnnzoo train clips the parameter itself after every optimizer step
    result = rnnzoo.train(
        None,
        [
            "model.cell=indrnn", "model.activation=relu", "model.hidden_size=8",
            "model.cell_args.recurrent_max=0.6", "model.cell_args.recurrent_init=0.6",
            "optim.lr=0.5", "task.length=10", "task.val_size=16", "trainer.batch_size=16",
            "trainer.steps=5", "trainer.eval_every=5", "trainer.progress=false",
            "gradflow.every=0", "tracking.wandb_mode=disabled", "controllers={}",
        ],
        run_dir=tmp_path / "run",
    )  # fmt: skip
    trained = rnnzoo.load_run(result.run_dir).model.cells()[0]
    assert isinstance(trained, IndRNNCell)
    u, bound = trained.u.detach().abs(), torch.tensor(0.6)  # both float32
    assert bool((u <= bound).all()) and bool((u == bound).any())  # lr 0.5 pushed some there


def test_ugrnn_follows_collins_et_al() -> None:
    torch.manual_seed(2)
    cell = UGRNNCell(I, H, Tanh()).double()
    x, h = data(2)
    out, _, _ = step_loop(cell, x, (h,), None, False)
    p = params(cell)
    W_c, W_g = p["weight_ih"].split(H)
    U_c, U_g = p["weight_hh"].split(H)
    b_c, b_g = p["bias"].split(H)
    for t in range(T):
        c = torch.tanh(x[:, t] @ W_c.T + h @ U_c.T + b_c)
        u = torch.sigmoid(x[:, t] @ W_g.T + h @ U_g.T + b_g)
        h = u * h + (1 - u) * c
        torch.testing.assert_close(out[:, t], h, **EXACT)
    assert float(b_g.min()) == 1.0  # gate_bias


def test_exprnn_stays_orthogonal_through_training_and_keeps_the_norm() -> None:
    torch.manual_seed(3)
    cell = ExpRNNCell(I, H, Tanh())  # float32, as it trains
    start = cell.recurrent.weight.detach().clone()
    optimizer = torch.optim.Adam(cell.parameters(), lr=0.05)
    x, h = (t.float() for t in data(3))
    for _ in range(20):
        out, _, _ = step_loop(cell, x, (h,), None, False)
        loss = (out - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    B_ = cell.recurrent_weights()["B"].detach()
    assert float((B_ - start).abs().max()) > 0.01  # training moved it
    torch.testing.assert_close(B_.T @ B_, torch.eye(H), rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.linalg.matrix_norm(B_, ord=2), torch.tensor(1.0))
    # with no input and the identity for g, h_t = B^t h_0: the norm never changes
    linear = ExpRNNCell(I, H, Identity())
    with torch.no_grad():
        linear.input.bias.zero_()
    states = step_loop(linear, torch.zeros(B, 50, I), (h,), None, False)[0]
    norms = torch.linalg.vector_norm(states, dim=-1)
    torch.testing.assert_close(norms, torch.linalg.vector_norm(h, dim=-1)[:, None].expand_as(norms))


def test_antisymmetric_rnn_follows_chang_et_al() -> None:
    torch.manual_seed(4)
    cell = AntisymmetricRNNCell(I, H, Tanh(), epsilon=0.3, gamma=0.2).double()
    x, h = data(4)
    out, _, _ = step_loop(cell, x, (h,), None, False)
    p = params(cell)
    M = p["weight"] - p["weight"].T - 0.2 * torch.eye(H, dtype=F64)
    for t in range(T):
        h = h + 0.3 * torch.tanh(h @ M.T + x[:, t] @ p["weight_ih"].T + p["bias"])
        torch.testing.assert_close(out[:, t], h, **EXACT)
    # W - W^T has imaginary eigenvalues; the diffusion moves their real part to -gamma
    eigenvalues = torch.linalg.eigvals(cell.recurrent_weights()["W - W^T - gamma I"].detach())
    torch.testing.assert_close(eigenvalues.real, torch.full((H,), -0.2, dtype=F64))
    assert float(eigenvalues.imag.abs().max()) > 0.1


def test_cornn_matches_the_authors_formulation() -> None:
    """The authors' code writes the step with one linear map over (x, z, y)."""
    torch.manual_seed(5)
    cell = CoRNNCell(I, H, Tanh()).double()
    x, y = data(5)
    z = torch.randn(B, H, dtype=F64)
    out, (y_end, z_end), _ = step_loop(cell, x, (y, z), None, False)
    p = params(cell)
    i2h = torch.cat([p["weight_ih"], p["w_z"], p["w_y"]], dim=1)
    for t in range(T):
        z = z + cell.dt * (
            torch.tanh(torch.cat([x[:, t], z, y], 1) @ i2h.T + p["bias"])
            - cell.gamma * y
            - cell.epsilon * z
        )
        y = y + cell.dt * z
        torch.testing.assert_close(out[:, t], y, **EXACT)
    torch.testing.assert_close(z_end, z, **EXACT)
    assert (cell.dt, cell.gamma, cell.epsilon) == (0.042, 2.7, 4.7)
