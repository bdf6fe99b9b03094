"""The LSTM variants of the zoo against independent implementations of their
papers' equations (float64, step by step) and published properties."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnzoo.recurrence import step_loop
from rnnzoo_plugins.activations import Tanh
from rnnzoo_plugins.cells.cifg_lstm import CIFGLSTMCell
from rnnzoo_plugins.cells.ln_lstm import LayerNormLSTMCell
from rnnzoo_plugins.cells.peephole_lstm import PeepholeLSTMCell

EXACT = {"rtol": 1e-12, "atol": 1e-12}
F64 = torch.float64
B, T, I, H = 3, 7, 4, 5  # noqa: E741


def data(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, T, I, generator=g, dtype=F64),
        torch.randn(B, H, generator=g, dtype=F64),
        torch.randn(B, H, generator=g, dtype=F64),
    )


def blocks(w: Tensor, n: int) -> list[Tensor]:
    return list(w.detach().split(H, dim=0))[:n]


def test_peephole_lstm_follows_gers_et_al() -> None:
    torch.manual_seed(0)
    cell = PeepholeLSTMCell(I, H, Tanh()).double()
    x, h, c = data()
    out, (h_end, c_end), _ = step_loop(cell, x, (h, c), None, False)
    W_i, W_f, W_c, W_o = blocks(cell.weight_ih, 4)
    U_i, U_f, U_c, U_o = blocks(cell.weight_hh, 4)
    b_i, b_f, b_c, b_o = blocks(cell.bias, 4)
    p_i, p_f, p_o = cell.peephole.detach()
    for t in range(T):
        x_t = x[:, t]
        i = torch.sigmoid(x_t @ W_i.T + h @ U_i.T + p_i * c + b_i)
        f = torch.sigmoid(x_t @ W_f.T + h @ U_f.T + p_f * c + b_f)
        c = f * c + i * torch.tanh(x_t @ W_c.T + h @ U_c.T + b_c)
        o = torch.sigmoid(x_t @ W_o.T + h @ U_o.T + p_o * c + b_o)
        h = o * torch.tanh(c)
        torch.testing.assert_close(out[:, t], h, **EXACT)
    torch.testing.assert_close(h_end, h, **EXACT)
    torch.testing.assert_close(c_end, c, **EXACT)
    assert float(cell.bias.detach()[H : 2 * H].min()) == 1.0  # forget_bias


def test_peephole_lstm_without_peepholes_is_torch_lstm() -> None:
    torch.manual_seed(1)
    cell = PeepholeLSTMCell(I, H, Tanh()).double()
    reference = nn.LSTM(I, H, batch_first=True).double()
    with torch.no_grad():
        cell.peephole.zero_()
        reference.weight_ih_l0.copy_(cell.weight_ih)
        reference.weight_hh_l0.copy_(cell.weight_hh)
        reference.bias_ih_l0.copy_(cell.bias)
        reference.bias_hh_l0.zero_()
    x, h, c = data(1)
    out, (h_end, c_end), _ = step_loop(cell, x, (h, c), None, False)
    want, (h_ref, c_ref) = reference(x, (h[None], c[None]))
    torch.testing.assert_close(out, want, **EXACT)
    torch.testing.assert_close(c_end, c_ref[0], **EXACT)


def test_cifg_lstm_couples_the_gates_as_greff_et_al() -> None:
    torch.manual_seed(2)
    cell = CIFGLSTMCell(I, H, Tanh()).double()
    x, h, c = data(2)
    out, (h_end, c_end), _ = step_loop(cell, x, (h, c), None, False)
    W_i, W_c, W_o = blocks(cell.weight_ih, 3)
    U_i, U_c, U_o = blocks(cell.weight_hh, 3)
    b_i, b_c, b_o = blocks(cell.bias, 3)
    p_i, p_o = cell.peephole.detach()
    for t in range(T):
        x_t = x[:, t]
        i = torch.sigmoid(x_t @ W_i.T + h @ U_i.T + p_i * c + b_i)
        c = (1 - i) * c + i * torch.tanh(x_t @ W_c.T + h @ U_c.T + b_c)
        o = torch.sigmoid(x_t @ W_o.T + h @ U_o.T + p_o * c + b_o)
        h = o * torch.tanh(c)
        torch.testing.assert_close(out[:, t], h, **EXACT)
    torch.testing.assert_close(c_end, c, **EXACT)
    # three gate blocks: a quarter fewer recurrent weights than an LSTM's four
    assert cell.weight_hh.shape == (3 * H, H)
    assert float(cell.bias.detach()[:H].max()) == -1.0  # f = 1 - i starts near sigmoid(1)
    without = CIFGLSTMCell(I, H, Tanh(), peepholes=False)
    assert without.peephole is None and len(list(without.parameters())) == 3


def layer_norm(z: Tensor, gain: Tensor, bias: Tensor, eps: float) -> Tensor:
    mean = z.mean(-1, keepdim=True)
    var = ((z - mean) ** 2).mean(-1, keepdim=True)
    return gain * (z - mean) / torch.sqrt(var + eps) + bias


def test_ln_lstm_follows_ba_kiros_hinton() -> None:
    torch.manual_seed(3)
    cell = LayerNormLSTMCell(I, H, Tanh()).double()
    with torch.no_grad():  # away from the initial gains of 1 and biases of 0
        for ln in (cell.ln_h, cell.ln_x, cell.ln_c):
            ln.weight.uniform_(0.5, 1.5)
            ln.bias.uniform_(-0.5, 0.5)
    x, h, c = data(3)
    out, (h_end, c_end), _ = step_loop(cell, x, (h, c), None, False)
    p = {n: v.detach() for n, v in cell.named_parameters()}
    for t in range(T):
        gates = (
            layer_norm(h @ p["weight_hh"].T, p["ln_h.weight"], p["ln_h.bias"], cell.eps)
            + layer_norm(x[:, t] @ p["weight_ih"].T, p["ln_x.weight"], p["ln_x.bias"], cell.eps)
            + p["bias"]
        )
        f, i, o, u = gates.split(H, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(u)
        h = torch.sigmoid(o) * torch.tanh(layer_norm(c, p["ln_c.weight"], p["ln_c.bias"], cell.eps))
        torch.testing.assert_close(out[:, t], h, **EXACT)
    torch.testing.assert_close(c_end, c, **EXACT)


def test_ln_lstm_is_invariant_to_rescaling_its_weight_matrices() -> None:
    """Ba et al., section 5: layer normalisation makes the outputs invariant to
    scaling a weight matrix (exactly so with eps = 0)."""
    torch.manual_seed(4)
    cell = LayerNormLSTMCell(I, H, Tanh(), eps=0.0).double()
    x, h, c = data(4)
    before = step_loop(cell, x, (h, c), None, False)[0]
    with torch.no_grad():
        cell.weight_hh.mul_(3.0)
        cell.weight_ih.mul_(0.2)
    after = step_loop(cell, x, (h, c), None, False)[0]
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)
