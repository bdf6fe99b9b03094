"""The recurrence engine: fast path against step loop, masking, zero-length
sequences (truncated-BPTT windows), per-step states, dropout, cell initialisation."""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy

import pytest
import torch
from torch import Tensor, nn

from rnnzoo import Batch, Cell, State
from rnnzoo.errors import DataError, UsageError
from rnnzoo.recurrence import Recurrence, reverse_padded, step_loop
from rnnzoo_plugins.activations import HardTanh, ReLU, Sigmoid, Tanh
from rnnzoo_plugins.cells.elman import ElmanCell
from rnnzoo_plugins.cells.gru import GRUCell
from rnnzoo_plugins.cells.irnn import IRNNCell
from rnnzoo_plugins.cells.lstm import LSTMCell

BATCH, STEPS, INPUT, HIDDEN = 4, 6, 3, 5


class Integrator(Cell):
    """A test cell whose output is not its hidden state: h follows an Elman step,
    the output m is a running average of h (state layout (h, m))."""

    state_layout = ("h", "m")

    def __init__(self, input_size: int, hidden_size: int, decay: float = 0.5) -> None:
        super().__init__(input_size, hidden_size)
        self.step = nn.Linear(input_size + hidden_size, hidden_size)
        self.decay = decay

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h, m = state
        h = torch.tanh(self.step(torch.cat([x_t, h], -1)))
        m = self.decay * m + (1 - self.decay) * h
        return m, (h, m)


CellFactory = Callable[[int, int], Cell]
#: cells with a fused kernel
FUSED: dict[str, CellFactory] = {
    "elman-tanh": lambda i, h: ElmanCell(i, h, Tanh()),
    "elman-relu": lambda i, h: ElmanCell(i, h, ReLU()),
    "irnn": lambda i, h: IRNNCell(i, h, input_std=0.3),
    "lstm": lambda i, h: LSTMCell(i, h, Tanh()),
    "gru": lambda i, h: GRUCell(i, h, Tanh()),
}
#: cells that only have the step loop
STEP_ONLY: dict[str, CellFactory] = {
    "elman-sigmoid": lambda i, h: ElmanCell(i, h, Sigmoid()),
    "lstm-relu": lambda i, h: LSTMCell(i, h, ReLU()),
    "gru-hardtanh": lambda i, h: GRUCell(i, h, HardTanh()),
    "integrator": lambda i, h: Integrator(i, h),
}
ALL = {**FUSED, **STEP_ONLY}
LENGTHS = {
    "full": None,
    "padded": torch.tensor([3, STEPS, 1, 4]),
    "empty": torch.tensor([3, 0, STEPS, 0]),
    "all-empty": torch.tensor([0, 0, 0, 0]),
}


def recurrence(kind: str, num_layers: int = 2, bidirectional: bool = True) -> Recurrence:
    torch.manual_seed(0)
    return Recurrence(ALL[kind], INPUT, HIDDEN, num_layers, bidirectional=bidirectional)


def random_state(model: Recurrence) -> list[State]:
    return [tuple(torch.randn_like(s) for s in c) for c in model.initial_state(BATCH, "cpu")]


def run(
    model: Recurrence, x: Tensor, lengths: Tensor | None, state: list[State]
) -> tuple[list[Tensor], list[Tensor]]:
    """Outputs and final states, then the gradients of a loss that reads them all
    with respect to the inputs, the initial state and every parameter."""
    gen = torch.Generator().manual_seed(1)
    x = x.clone().requires_grad_(True)
    state = [tuple(s.clone().requires_grad_(True) for s in c) for c in state]
    result = model(x, lengths, state)
    finals = [s for c in result.final_state for s in c]

    def weight(t: Tensor) -> Tensor:
        return torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device)

    loss = (result.outputs * weight(result.outputs)).sum()
    loss = loss + sum((f * weight(f)).sum() for f in finals)
    leaves = [x, *(s for c in state for s in c), *model.parameters()]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = [
        torch.zeros_like(leaf) if g is None else g for leaf, g in zip(leaves, grads, strict=True)
    ]
    return [v.detach() for v in (result.outputs, *finals)], grads


def count_steps(model: Recurrence) -> list[int]:
    """Counts the calls of the cells' one-step forward."""
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    for cell in model.cells:
        cell.register_forward_pre_hook(hook)
    return calls


# -- fast path against step loop ----------------------------------------------


@pytest.mark.parametrize("case", list(LENGTHS))
@pytest.mark.parametrize("kind", list(FUSED))
def test_fused_path_equals_step_loop(kind: str, case: str) -> None:
    model = recurrence(kind).double()
    x = torch.randn(BATCH, STEPS, INPUT, dtype=torch.float64)
    state = [tuple(s.double() for s in c) for c in random_state(model)]
    model.fused = True
    fused_values, fused_grads = run(model, x, LENGTHS[case], state)
    model.fused = False
    loop_values, loop_grads = run(model, x, LENGTHS[case], state)
    for a, b in zip(fused_values + fused_grads, loop_values + loop_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", ["full", "padded", "empty"])
@pytest.mark.parametrize("kind", list(FUSED))
def test_fused_path_is_taken_by_builtins(kind: str, case: str) -> None:
    model = recurrence(kind)
    calls = count_steps(model)
    x = torch.randn(BATCH, STEPS, INPUT)
    model(x, LENGTHS[case])
    assert calls[0] == 0, "the fused kernel should have run, not the step loop"
    model(x, LENGTHS[case], return_states=True)
    assert calls[0] == STEPS * len(model.cells), "per-step states need the step loop"
    calls[0] = 0
    model.fused = False
    model(x, LENGTHS[case])
    assert calls[0] == STEPS * len(model.cells)


@pytest.mark.parametrize("kind", list(STEP_ONLY))
def test_other_activations_run_the_step_loop(kind: str) -> None:
    model = recurrence(kind)
    calls = count_steps(model)
    model(torch.randn(BATCH, STEPS, INPUT))
    assert calls[0] == STEPS * len(model.cells)


def test_recording_activation_runs_the_step_loop() -> None:
    """A probe that records pre-activations must see them: no fused kernel then."""
    model = recurrence("elman-tanh", num_layers=1, bidirectional=False)
    activation = model.cell(0).activation
    activation.recorded = []
    model(torch.randn(BATCH, STEPS, INPUT))
    assert len(activation.recorded) == STEPS
    assert activation.recorded[0].shape == (BATCH, HIDDEN)


# -- masking --------------------------------------------------------------------


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "step-loop"])
@pytest.mark.parametrize("kind", list(ALL))
def test_padding_changes_nothing_real(kind: str, fused: bool) -> None:
    model = recurrence(kind)
    model.fused = fused
    lengths = LENGTHS["padded"]
    real = torch.arange(STEPS)[None, :] < lengths[:, None]
    x = torch.randn(BATCH, STEPS, INPUT)
    noisy = torch.where(real[..., None], x, 1e3 * torch.randn(BATCH, STEPS, INPUT))
    noisy[2, -1, 0], noisy[0, -1, 1] = float("nan"), float("inf")
    state = random_state(model)
    clean_values, clean_grads = run(model, x, lengths, state)
    noisy_values, noisy_grads = run(model, noisy, lengths, state)
    for a, b in zip(clean_values + clean_grads, noisy_values + noisy_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    outputs, grad_x = clean_values[0], clean_grads[0]
    assert float(outputs[~real].abs().max()) == 0.0, "padded outputs must be zero"
    assert float(grad_x[~real].abs().max()) == 0.0, "padding must get no gradient"
    assert float(grad_x[real].abs().min()) > 0.0


@pytest.mark.parametrize("kind", ["elman-tanh", "lstm", "integrator"])
def test_padded_batch_equals_each_sequence_alone(kind: str) -> None:
    """A sequence padded in a batch gives what it gives on its own, unpadded."""
    model = recurrence(kind)
    lengths = LENGTHS["padded"]
    x = torch.randn(BATCH, STEPS, INPUT)
    state = random_state(model)
    batch = model(x, lengths, state)
    for b, n in enumerate(lengths.tolist()):
        alone = model(x[b : b + 1, :n], None, [tuple(s[b : b + 1] for s in c) for c in state])
        torch.testing.assert_close(batch.outputs[b, :n], alone.outputs[0], atol=1e-6, rtol=0)
        for ours, single in zip(batch.final_state, alone.final_state, strict=True):
            for s, t in zip(ours, single, strict=True):
                torch.testing.assert_close(s[b], t[0], atol=1e-6, rtol=0)


def test_reverse_padded_reverses_within_each_length() -> None:
    x = torch.arange(BATCH * STEPS).view(BATCH, STEPS, 1)
    lengths = torch.tensor([3, STEPS, 0, 1])
    got = reverse_padded(x, lengths)[..., 0]
    assert got[0].tolist() == [2, 1, 0, 3, 4, 5]
    assert got[1].tolist() == list(range(11, 5, -1))
    assert got[2].tolist() == list(range(12, 18))
    assert got[3].tolist() == list(range(18, 24))
    assert torch.equal(reverse_padded(reverse_padded(x, lengths), lengths), x)


# -- zero-length sequences (truncated-BPTT windows past a sequence's end) ---------


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "step-loop"])
@pytest.mark.parametrize("kind", ["elman-relu", "lstm", "gru", "integrator"])
def test_zero_length_sequences_keep_their_state(kind: str, fused: bool) -> None:
    model = recurrence(kind)
    model.fused = fused
    lengths = LENGTHS["empty"]
    empty = lengths == 0
    state = random_state(model)
    x = torch.randn(BATCH, STEPS, INPUT, requires_grad=True)
    leaves = [tuple(s.clone().requires_grad_(True) for s in c) for c in state]
    result = model(x, lengths, leaves)
    assert float(result.outputs[empty].detach().abs().max()) == 0.0
    weights = [tuple(torch.randn_like(s) for s in c) for c in result.final_state]
    pairs = zip(result.final_state, weights, strict=True)
    loss = sum((s * w).sum() for c, cw in pairs for s, w in zip(c, cw, strict=True))
    loss.backward()
    for final, initial, leaf, weight in zip(
        result.final_state, state, leaves, weights, strict=True
    ):
        for f, s0, s_leaf, w in zip(final, initial, leaf, weight, strict=True):
            assert torch.equal(f[empty], s0[empty]), "an empty sequence keeps its state"
            assert s_leaf.grad is not None
            # ...so the gradient passes straight through to the initial state
            assert torch.equal(s_leaf.grad[empty], w[empty])
            assert not torch.equal(f[~empty], s0[~empty])
    assert x.grad is not None and float(x.grad[empty].abs().max()) == 0.0


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "step-loop"])
@pytest.mark.parametrize("kind", ["lstm", "integrator"])
def test_windows_carrying_state_equal_one_pass(kind: str, fused: bool) -> None:
    """Truncated-BPTT windows, carrying the state across, compute what one pass
    over the whole batch computes, even where a sequence ends before a window."""
    model = recurrence(kind, bidirectional=False)
    model.fused = fused
    steps = 9
    batch = Batch(
        inputs=torch.randn(BATCH, steps, INPUT),
        targets=torch.zeros(BATCH, steps),
        lengths=torch.tensor([9, 2, 5, 3]),
    )
    whole = model(batch.inputs, batch.lengths)
    state, outputs = None, []
    for start in range(0, steps, 3):
        part = batch.window(start, start + 3, per_token=True)
        result = model(part.inputs, part.lengths, state)
        state, outputs = result.final_state, [*outputs, result.outputs]
    assert state is not None
    torch.testing.assert_close(torch.cat(outputs, 1), whole.outputs, atol=1e-6, rtol=0)
    for ours, reference in zip(state, whole.final_state, strict=True):
        for s, r in zip(ours, reference, strict=True):
            torch.testing.assert_close(s, r, atol=1e-6, rtol=0)


# -- per-step states ------------------------------------------------------------


def test_step_states_follow_the_outputs() -> None:
    model = recurrence("gru")
    lengths = LENGTHS["padded"]
    result = model(torch.randn(BATCH, STEPS, INPUT), lengths, return_states=True)
    assert result.step_states is not None
    assert [len(s) for s in result.step_states] == [STEPS] * 4
    top_forward, top_backward = result.step_states[2], result.step_states[3]
    for b, n in enumerate(lengths.tolist()):
        for t in range(n):
            torch.testing.assert_close(top_forward[t][0][b], result.outputs[b, t, :HIDDEN])
            # the backward direction's states come in processing order
            torch.testing.assert_close(top_backward[t][0][b], result.outputs[b, n - 1 - t, HIDDEN:])


def test_step_states_hold_every_state_component() -> None:
    """An LSTM's recorded states are (h_t, c_t), the last one its final state."""
    model = recurrence("lstm", num_layers=1, bidirectional=False)
    result = model(torch.randn(BATCH, STEPS, INPUT), return_states=True)
    assert result.step_states is not None
    states = result.step_states[0]
    assert all(len(state) == 2 for state in states)
    for got, final in zip(states[-1], result.final_state[0], strict=True):
        torch.testing.assert_close(got, final)
    h, c = states[3]
    assert not torch.allclose(h, c)


def test_step_states_give_the_total_derivative() -> None:
    """dL/dh_t through the recurrence: for an Elman cell with loss sum_t w_t . h_t,
    g_t = w_t + W_hh^T (g_{t+1} * g'(z_{t+1})), computed here by hand."""
    model = recurrence("elman-tanh", num_layers=1, bidirectional=False)
    cell = model.cell(0)
    result = model(torch.randn(BATCH, STEPS, INPUT), return_states=True)
    assert result.step_states is not None
    states = [h for (h,) in result.step_states[0]]
    weights = torch.randn(BATCH, STEPS, HIDDEN)
    loss = (result.outputs * weights).sum()
    got = torch.autograd.grad(loss, states)
    expected = weights[:, -1]
    torch.testing.assert_close(got[-1], expected)
    for t in range(STEPS - 2, -1, -1):
        slope = 1 - states[t + 1].detach().pow(2)
        expected = weights[:, t] + (expected * slope) @ cell.weight_hh.detach()
        torch.testing.assert_close(got[t], expected, atol=1e-6, rtol=1e-5)


# -- layers, dropout, errors ---------------------------------------------------


def test_dropout_acts_between_layers_only() -> None:
    x = torch.randn(BATCH, STEPS, INPUT)
    for layers, differs in ((1, False), (2, True)):
        torch.manual_seed(0)
        model = Recurrence(FUSED["lstm"], INPUT, HIDDEN, layers, dropout=0.5)
        train = model.train()(x).outputs
        evaluation = model.eval()(x).outputs
        assert torch.equal(model(x).outputs, evaluation)
        assert (not torch.equal(train, evaluation)) == differs


def test_output_size_and_final_state_layout() -> None:
    model = Recurrence(FUSED["lstm"], INPUT, HIDDEN, num_layers=3, bidirectional=True)
    result = model(torch.randn(BATCH, STEPS, INPUT))
    assert model.output_size == 2 * HIDDEN
    assert result.outputs.shape == (BATCH, STEPS, 2 * HIDDEN)
    assert len(result.final_state) == 6
    assert all(len(s) == 2 and s[0].shape == (BATCH, HIDDEN) for s in result.final_state)


def test_bad_lengths_and_states_are_reported() -> None:
    model = recurrence("gru")
    x = torch.randn(BATCH, STEPS, INPUT)
    with pytest.raises(DataError, match="outside"):
        model(x, torch.tensor([STEPS + 1, 1, 1, 1]))
    with pytest.raises(DataError, match="outside"):
        model(x, torch.tensor([-1, 1, 1, 1]))
    with pytest.raises(DataError, match="one length per sequence"):
        model(x, torch.tensor([1, 1]))
    with pytest.raises(UsageError, match="initial state has 1 entries"):
        model(x, None, model.initial_state(BATCH, x.device)[:1])


# -- built-in cell initialisation ----------------------------------------------


@pytest.mark.parametrize("kind", ["elman-tanh", "irnn", "lstm", "gru"])
def test_fused_kernel_adds_nothing_to_the_cell(kind: str) -> None:
    """The kernel's template module is no part of the cell: its parameters and state
    dict are the cell's own four, and a copy of the cell runs on the copy's weights."""
    cell = FUSED[kind](INPUT, HIDDEN)
    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    assert [n for n, _ in cell.named_parameters()] == names
    assert list(cell.state_dict()) == names
    copy = deepcopy(cell)
    with torch.no_grad():
        copy.weight_hh.mul_(2)
    x = torch.randn(BATCH, STEPS, INPUT)
    state = cell.initial_state(BATCH, x.device)
    ours, theirs = cell.forward_sequence(x, state, None), copy.forward_sequence(x, state, None)
    assert ours is not None and theirs is not None
    assert not torch.equal(ours[0], theirs[0])
    loop, _, _ = step_loop(copy, x, state, None, False)
    torch.testing.assert_close(theirs[0], loop, atol=1e-6, rtol=1e-5)


def test_irnn_starts_at_the_identity() -> None:
    torch.manual_seed(0)
    cell = IRNNCell(INPUT, 64, identity_scale=0.5, input_std=0.01)
    torch.testing.assert_close(cell.weight_hh, 0.5 * torch.eye(64), rtol=0, atol=0)
    assert not cell.bias_ih.any() and not cell.bias_hh.any()
    assert 0.008 < float(cell.weight_ih.detach().std()) < 0.012
    assert isinstance(cell.activation, ReLU)
    # at the identity with zero input the state is carried forward unchanged
    h = torch.rand(2, 64)
    out, _ = cell(torch.zeros(2, 64), (h,))
    torch.testing.assert_close(out, 0.5 * h)


@pytest.mark.parametrize("forget_bias", [1.0, 2.5])
def test_lstm_forget_bias(forget_bias: float) -> None:
    torch.manual_seed(0)
    cell = LSTMCell(INPUT, HIDDEN, Tanh(), forget_bias=forget_bias)
    forget = slice(HIDDEN, 2 * HIDDEN)
    total = (cell.bias_ih + cell.bias_hh).detach()
    torch.testing.assert_close(total[forget], torch.full((HIDDEN,), forget_bias))
    bound = 1 / HIDDEN**0.5
    others = torch.cat([total[:HIDDEN], total[2 * HIDDEN :]])
    assert float(others.abs().max()) <= 2 * bound and float(others.std()) > 0


def test_lstm_without_forget_bias_keeps_uniform_init() -> None:
    torch.manual_seed(0)
    cell = LSTMCell(INPUT, HIDDEN, Tanh(), forget_bias=None)
    bound = 1 / HIDDEN**0.5
    for p in cell.parameters():
        assert float(p.detach().abs().max()) <= bound and float(p.detach().std()) > 0


def test_elman_init_scale() -> None:
    torch.manual_seed(0)
    cell = ElmanCell(INPUT, 100, Tanh(), init_scale=3.0)
    bound = 3.0 / 10
    assert 0.9 * bound < float(cell.weight_hh.detach().abs().max()) <= bound


# -- devices ------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["lstm", "gru", "elman-relu", "integrator"])
def test_cuda_matches_cpu(kind: str) -> None:
    """Fused (cuDNN) and step-loop runs on the GPU, gradients included, agree with
    the CPU; training mode or not, backward must work."""
    model = recurrence(kind)
    x = torch.randn(BATCH, STEPS, INPUT)
    state = random_state(model)
    lengths = LENGTHS["empty"]
    cpu_values, cpu_grads = run(model, x, lengths, state)
    gpu = model.to("cuda").eval()
    for fused in (True, False):
        gpu.fused = fused
        cuda_state = [tuple(s.cuda() for s in c) for c in state]
        values, grads = run(gpu, x.cuda(), lengths.cuda(), cuda_state)
        for a, b in zip(cpu_values + cpu_grads, values + grads, strict=True):
            torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fused_kernel_leaves_the_weights_in_place() -> None:
    """cuDNN copies a cell's separate weights per call; it must not move them into
    a buffer of its own (they are the cell's parameters, which an optimizer holds)."""
    model = recurrence("lstm").cuda()
    where = [p.data_ptr() for p in model.parameters()]
    model(torch.randn(BATCH, STEPS, INPUT, device="cuda")).outputs.sum().backward()
    assert [p.data_ptr() for p in model.parameters()] == where
