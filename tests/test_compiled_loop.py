"""``model.compile``: blocks of steps compiled by torch.compile against the eager step
loop and nn.LSTM (outputs, final state, every gradient), with padding, stacked and
bidirectional layers, truncated BPTT and carried state; one graph reused for every
block; weight gradients as one product per block (a weight in several products, a
cell whose products change from step to step, the products found once per batch
size); the eager fallback with one warning;
the config keys end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cli_run import rnnzoo
from jsonl import read_jsonl
from rnnzoo_example_plugin import ExampleLeakyCell
from test_tbptt import trainer
from torch import Tensor, fx, nn

from rnnzoo import compiled_loop, recurrence
from rnnzoo.block_products import call_sites
from rnnzoo.cell import Cell, State
from rnnzoo.compiled_loop import CompiledLoop
from rnnzoo.recurrence import Recurrence, step_loop
from rnnzoo_plugins.activations import Tanh
from rnnzoo_plugins.cells.gru import GRUCell
from rnnzoo_plugins.cells.lstm import LSTMCell

ROOT = Path(__file__).resolve().parents[1]
TOL = {"atol": 1e-5, "rtol": 1e-5}
CELLS = {
    "lstm": lambda i, h: LSTMCell(i, h, Tanh()),
    "gru": lambda i, h: GRUCell(i, h, Tanh()),
    "example_leaky": lambda i, h: ExampleLeakyCell(i, h, Tanh()),  # without project_input
}
#: 13 steps in blocks of 4 (13 % 4 = 1 eager step): no padding; padding from step 5
#: (the first block unmasked); a sequence of one step and one of none
LENGTHS = {"full": None, "padded": [13, 9, 5, 7], "empty": [13, 9, 1, 0]}
GRAPHS: list[fx.GraphModule] = []


def counting(gm: fx.GraphModule, example_inputs: list[Tensor]):
    """A torch.compile backend that runs the captured graph as it is and keeps it."""
    GRAPHS.append(gm)
    return gm.forward


@pytest.fixture(autouse=True)
def fresh_compiler():
    """Each test compiles from scratch (no graphs or recompile counts of another)."""
    torch.compiler.reset()
    GRAPHS.clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.compiler.reset()


def run(loop, cell: Cell, x: Tensor, lengths: Tensor | None):
    """Outputs, final state and the gradients of a loss over both with respect to the
    inputs, the initial state and the parameters."""
    x = x.clone().requires_grad_(True)
    state = tuple(
        (
            0.1
            * torch.randn(x.shape[0], cell.hidden_size, generator=torch.Generator().manual_seed(k))
        ).requires_grad_(True)
        for k, _ in enumerate(cell.state_layout)
    )
    out, final = loop(cell, x, state, lengths)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    loss = (out * weights).sum() + sum(f.pow(2).sum() for f in final)
    return out, final, torch.autograd.grad(loss, [x, *state, *cell.parameters()])


def assert_same(got, want) -> None:
    for g, w in zip(got, want, strict=True):
        if isinstance(g, Tensor):
            torch.testing.assert_close(g, w, **TOL)
        else:
            assert_same(g, w)


def eager(cell, x, state, lengths):
    return step_loop(cell, x, state, lengths, False)[:2]


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("case", list(LENGTHS))
@pytest.mark.parametrize("per_block", [True, False], ids=["block", "step"])
def test_compiled_blocks_match_the_eager_loop(name: str, case: str, per_block: bool) -> None:
    """Weight gradients one product per block (the default) or one per step."""
    torch.manual_seed(0)
    cell = CELLS[name](5, 8)
    x = torch.randn(4, 13, 5)
    lengths = None if LENGTHS[case] is None else torch.tensor(LENGTHS[case])
    compiled = CompiledLoop(4, "aot_eager", block_weight_grads=per_block)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the eager loop
        got = run(compiled, cell, x, lengths)
    assert compiled.failure is None
    assert_same(got, run(eager, cell, x, lengths))


def test_one_graph_serves_every_block_whatever_the_length() -> None:
    torch.manual_seed(0)
    cell = LSTMCell(5, 8, Tanh())
    compiled = CompiledLoop(4, counting)
    for steps in (13, 41, 8):
        out, _ = compiled(cell, torch.randn(3, steps, 5), cell.initial_state(3, "cpu"), None)
        assert out.shape == (3, steps, 8)
    assert len(GRAPHS) == 1
    # 4 steps unrolled in the one graph: one projection of the block's 4 inputs (no
    # projected sequence outside the graph), and the 4 products with the previous
    # state as deferred products, whose weight gradient is one product per block
    calls = [str(n.target) for n in GRAPHS[0].graph.nodes if n.op == "call_function"]
    assert calls.count(str(F.linear)) == 1
    assert calls.count("autograd_function_apply") == 4
    # without gradients, plain products: 4 with the state and the projection
    with torch.no_grad():
        compiled(cell, torch.randn(3, 9, 5), cell.initial_state(3, "cpu"), None)
    assert len(GRAPHS) == 2
    linears = [n for n in GRAPHS[1].graph.nodes if n.target is F.linear]
    assert len(linears) == 5
    projections = [n for n in linears if n.args[0].op == "call_method"]  # x.transpose(0, 1)
    assert len(projections) == 1
    # padding adds the masked block's graph, once
    for steps in (13, 41):
        x = torch.randn(3, steps, 5)
        compiled(cell, x, cell.initial_state(3, "cpu"), torch.tensor([steps, 6, 5]))
    assert len(GRAPHS) == 3


def test_inductor_lstm_matches_nn_lstm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real compiler (inductor, fused C++ kernels) on the built-in LSTM cell
    through the step loop, 10 steps in blocks of 4, against nn.LSTM. Its own
    compiler cache: torch 2.13 reuses a kernel cached under another
    ATEN_CPU_CAPABILITY, which then computes garbage."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    reference = nn.LSTM(5, 8, batch_first=True)
    engine = Recurrence(CELLS["lstm"], 5, 8, fused=False, compiled=CompiledLoop(4))
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(engine.cells[0], name).copy_(getattr(reference, f"{name}_l0"))
    x = torch.randn(3, 10, 5, requires_grad=True)
    weights = torch.randn(3, 10, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = engine(x)
        h, c = out.final_state[0]
        ((out.outputs * weights).sum() + h.sum() + c.pow(2).sum()).backward()
    grad_x, x.grad = x.grad, None
    expected, (h_n, c_n) = reference(x)
    ((expected * weights).sum() + h_n.sum() + c_n.pow(2).sum()).backward()
    assert_same((out.outputs, h, c, grad_x), (expected, h_n[0], c_n[0], x.grad))
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        want = getattr(reference, f"{name}_l0").grad
        torch.testing.assert_close(getattr(engine.cells[0], name).grad, want, **TOL)


def test_stacked_bidirectional_with_padding_matches_the_eager_engine() -> None:
    torch.manual_seed(0)
    models, loop = [], CompiledLoop(3, "aot_eager")
    for compiled in (None, loop):
        torch.manual_seed(1)
        models.append(Recurrence(CELLS["gru"], 5, 6, 2, True, fused=False, compiled=compiled))
    x = torch.randn(4, 11, 5)
    lengths = torch.tensor([11, 4, 8, 2])
    results = []
    for model in models:
        out = model(x, lengths)
        loss = out.outputs.sum() + sum(s.pow(2).sum() for st in out.final_state for s in st)
        results.append(
            (out.outputs, out.final_state, torch.autograd.grad(loss, list(model.parameters())))
        )
    assert_same(results[0], results[1])
    assert loop.failure is None  # compiled, not the eager loop against itself


@pytest.mark.parametrize("task", ["adding", "echo_stream"])
def test_truncated_bptt_and_carried_state_match_the_eager_loop(tmp_path, task: str) -> None:
    """Windows of 5 steps (a compiled block of 2 twice and one eager step) and, for
    the stream task, the state carried from one batch into the next."""
    overrides = ("model.fused=false", "controllers.tbptt.k1=5")
    plain = trainer(tmp_path, task, *overrides)
    compiled = trainer(tmp_path, task, *overrides, "model.compile=true", "model.compile_steps=2")
    assert compiled.model.recurrence.compiled.steps == 2
    compiled.model.recurrence.compiled.backend = counting  # runs the graph as captured
    for step in range(2):
        losses = [t.forward_backward(t.task.train_batch(step, 3)) for t in (plain, compiled)]
        assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for (name, want), got in zip(
        plain.model.named_parameters(), compiled.model.parameters(), strict=True
    ):
        torch.testing.assert_close(got.grad, want.grad, **TOL, msg=name)
    assert compiled.model.recurrence.compiled.failure is None
    assert GRAPHS, "no block was compiled"


class SharedWeightCell(Cell):
    """A cell using its recurrent weight four times a step: twice in ``F.linear`` on
    the state (two deferred products of one weight), once in a plain matmul and once
    in ``F.linear`` on a 3-D input (ordinary autograd uses), with a bias in one
    product and none in the other."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.w = nn.Parameter(torch.randn(hidden_size, hidden_size) / hidden_size**0.5)
        self.b = nn.Parameter(torch.randn(hidden_size))
        self.u = nn.Linear(input_size, hidden_size)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h = state[0]
        z = F.linear(h, self.w, self.b) + F.linear(torch.tanh(h), self.w) + h @ self.w * 0.5
        z = z + F.linear(h.unsqueeze(1), self.w).squeeze(1).sigmoid()
        h = torch.tanh(self.u(x_t) + z)
        return h, (h,)


class AlternatingCell(SharedWeightCell):
    """A cell whose products differ from step to step (its weight alternates)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.v = nn.Parameter(torch.randn(hidden_size, hidden_size) / hidden_size**0.5)
        self.calls = 0

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        self.calls += 1
        weight = self.w if self.calls % 2 else self.v
        h = torch.tanh(self.u(x_t) + F.linear(state[0], weight))
        return h, (h,)


def test_a_weight_used_by_several_products_gets_its_whole_gradient() -> None:
    torch.manual_seed(0)
    cell = SharedWeightCell(5, 8)
    x, lengths = torch.randn(4, 13, 5), torch.tensor(LENGTHS["padded"])
    compiled = CompiledLoop(4, counting)
    got = run(compiled, cell, x, lengths)
    calls = [str(n.target) for n in GRAPHS[0].graph.nodes if n.op == "call_function"]
    # three deferred products a step: two with w, and u's with the step's input
    assert calls.count("autograd_function_apply") == 3 * 4
    assert_same(got, run(eager, cell, x, lengths))


def test_a_cell_whose_products_vary_runs_eagerly_with_the_right_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deferred products need the same F.linear calls at every step; a cell that
    changes them is found out while compiling, in the middle of the engine's call,
    which then returns the eager loop's outputs and gradients (from the step count
    the eager loop started at, which picks the weights)."""
    torch.manual_seed(0)
    cell = AlternatingCell(5, 8)
    x = torch.randn(4, 13, 5, requires_grad=True)
    started_at = []

    def eager_loop(cell: AlternatingCell, *args):
        started_at.append(cell.calls)
        return step_loop(cell, *args)

    monkeypatch.setattr(recurrence, "step_loop", eager_loop)
    compiled = CompiledLoop(4, "aot_eager")
    engine = Recurrence(lambda i, h: cell, 5, 8, compiled=compiled)
    with pytest.warns(RuntimeWarning, match="cell AlternatingCell .* cannot be compiled"):
        out = engine(x).outputs
    assert "F.linear calls with its weights differ from step to step" in str(compiled.failure)
    assert len(started_at) == 1  # the engine fell back to the eager loop
    out.sum().backward()
    got = [out, x.grad, cell.w.grad, cell.v.grad]
    cell.calls, x.grad, cell.w.grad, cell.v.grad = started_at[0], None, None, None
    want = step_loop(cell, x, cell.initial_state(4, "cpu"), None, False)[0]
    want.sum().backward()
    assert_same(got, [want, x.grad, cell.w.grad, cell.v.grad])
    assert compiled(cell, x, cell.initial_state(4, "cpu"), None) is None  # from now on


def test_a_cell_s_products_are_found_once_per_batch_size_and_trained_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Finding the products runs a step of the cell: once, not at every call, until
    the batch size or the weights that train change."""
    found = []

    def counting_sites(*args):
        found.append(args[2].shape[0])
        return call_sites(*args)

    monkeypatch.setattr(compiled_loop, "call_sites", counting_sites)
    torch.manual_seed(0)
    cell = LSTMCell(5, 8, Tanh())
    compiled = CompiledLoop(4, "aot_eager")
    for batch in (3, 3, 2, 2):
        run(compiled, cell, torch.randn(batch, 9, 5), None)
    cell.weight_ih.requires_grad_(False)
    compiled(cell, torch.randn(2, 9, 5), cell.initial_state(2, "cpu"), None)
    assert found == [3, 2, 2]
    assert compiled.failure is None


class ProductsCell(Cell):
    """A cell whose ``F.linear`` calls on its weights take the forms deferred products
    must leave correct: ``"keywords"`` passes every argument by name, ``"heads"``
    multiplies the state split into two heads (``[2B, H/2]`` rows, not the step's
    ``B``) and ``"row_bias"`` adds a ``[1, H]`` bias, broadcast over the rows."""

    def __init__(self, input_size: int, hidden_size: int, form: str) -> None:
        super().__init__(input_size, hidden_size)
        self.form = form
        self.u = nn.Linear(input_size, hidden_size)
        size = hidden_size // 2 if form == "heads" else hidden_size
        self.w = nn.Parameter(torch.randn(size, size) / size**0.5)
        self.b = nn.Parameter(torch.randn(1, size))

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h = state[0]
        if self.form == "keywords":
            z = F.linear(input=h, weight=self.w, bias=self.b[0])
        elif self.form == "heads":
            z = F.linear(h.reshape(2 * h.shape[0], -1), self.w, self.b[0]).reshape(h.shape)
        else:
            z = F.linear(h, self.w, self.b)
        h = torch.tanh(self.u(x_t) + z)
        return h, (h,)


@pytest.mark.parametrize("form", ["keywords", "heads", "row_bias"])
def test_every_form_of_product_compiles_with_the_eager_gradients(form: str) -> None:
    torch.manual_seed(0)
    cell = ProductsCell(5, 8, form)
    x, lengths = torch.randn(4, 13, 5), torch.tensor(LENGTHS["padded"])
    compiled = CompiledLoop(4, "aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to the eager loop
        got = run(compiled, cell, x, lengths)
    assert compiled.failure is None
    assert_same(got, run(eager, cell, x, lengths))


def test_bf16_autocast_gives_float32_weight_gradients_near_the_eager_loops() -> None:
    """Under autocast (``trainer.precision=bf16``) a block's recorded inputs are bf16
    and its weights fp32: the block's weight gradient comes back in the weight's
    dtype, within bf16 rounding of the eager loop's (8 bits of mantissa, 13 steps)."""
    torch.manual_seed(0)
    cell = SharedWeightCell(5, 8)  # its state is bf16 after the first step
    x = torch.randn(4, 13, 5)
    compiled = CompiledLoop(4, "aot_eager")
    grads = []
    for loop in (compiled, eager):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = loop(cell, x, cell.initial_state(4, "cpu"), None)
        loss = (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
        grads.append(torch.autograd.grad(loss, list(cell.parameters())))
    assert compiled.failure is None
    for got, want in zip(*grads, strict=True):
        assert got.dtype == want.dtype == torch.float32
        scale = want.abs().max().item()
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2 * scale)


class NormalisedCell(Cell):
    """Recurrent batch norm (Cooijmans et al. 2016) on the state's product, then
    dropout: a step updates the running statistics and draws random numbers."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.u = nn.Linear(input_size, hidden_size)
        self.w = nn.Parameter(torch.randn(hidden_size, hidden_size) / hidden_size**0.5)
        self.norm = nn.BatchNorm1d(hidden_size)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        z = F.dropout(self.norm(F.linear(state[0], self.w)), 0.3)
        h = torch.tanh(self.u(x_t) + z)
        return h, (h,)


def test_finding_the_products_leaves_no_trace_on_the_cell_or_the_random_numbers() -> None:
    """Finding a cell's products runs one step of it beforehand: the running
    statistics and the dropout masks are then those of the eager loop. In float64,
    where batch norm does not magnify the deferred products' rounding at batch 4."""
    results = []
    for loop in (CompiledLoop(4, "aot_eager"), eager):
        torch.manual_seed(0)
        cell = NormalisedCell(5, 8).double()
        x = torch.randn(4, 13, 5, dtype=torch.float64, requires_grad=True)
        out, _ = loop(cell, x, cell.initial_state(4, "cpu", torch.float64), None)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()
        grads = torch.autograd.grad(loss, [x, *cell.parameters()])
        results.append((out, grads, [cell.norm.running_mean, cell.norm.running_var]))
        assert getattr(loop, "failure", None) is None
    assert_same(results[0], results[1])
    assert cell.norm.num_batches_tracked == 13


class BranchyCell(Cell):
    """A cell whose step takes a Python branch on a tensor's value."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.linear = nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h = torch.tanh(self.linear(torch.cat([x_t, state[0]], -1)))
        if h.sum() > 0:  # data-dependent control flow: no single graph
            h = -h
        return h, (h,)


def test_a_cell_that_cannot_compile_runs_eagerly_after_one_warning() -> None:
    torch.manual_seed(0)
    cell = BranchyCell(3, 4)
    compiled = CompiledLoop(2, "aot_eager")
    engine = Recurrence(lambda i, h: cell, 3, 4, compiled=compiled)
    x = torch.randn(2, 5, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = [engine(x).outputs for _ in range(2)]
    ours = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    message = str(ours[0].message)
    assert f"cell BranchyCell ({BranchyCell.__module__}) cannot be compiled" in message
    assert "eager step loop" in message and compiled.failure is not None
    expected = step_loop(cell, x, cell.initial_state(2, x.device), None, False)[0]
    for out in outputs:
        torch.testing.assert_close(out, expected, **TOL)


def test_a_recording_probe_gets_the_eager_loop() -> None:
    """A probe recording the pre-activations sees every step, as in the eager loop."""
    cell = LSTMCell(3, 4, Tanh())
    cell.activation.recorded = []
    engine = Recurrence(lambda i, h: cell, 3, 4, fused=False, compiled=CompiledLoop(2, counting))
    engine(torch.randn(2, 5, 3))
    assert len(cell.activation.recorded) == 2 * 5  # candidate and cell output, per step
    assert GRAPHS == []


def test_config_keys_are_checked() -> None:
    adding = ROOT / "experiments" / "adding.yaml"
    result = rnnzoo("train", adding, "model.compile_steps=0", "tracking.wandb_mode=disabled")
    assert result.code == 2, result.output
    assert "'model.compile_steps' must be at least 1, got 0" in result.err
    assert "Traceback" not in result.err
    result = rnnzoo("train", adding, "model.compile=maybe")
    assert result.code == 2, result.output
    assert "model.compile" in result.err and "Traceback" not in result.err


def test_train_with_compile_end_to_end(tmp_path) -> None:
    """`rnnzoo train ... model.compile=true` in its own process with an empty compiler
    cache: the same losses as the eager loop, and inductor compiled something. Blocks
    of 2 steps keep the two graphs (training, evaluation) quick to compile."""
    cache = tmp_path / "inductor"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    common = [
        "-m", "rnnzoo", "train", str(ROOT / "experiments" / "adding.yaml"),
        "model.fused=false", "model.hidden_size=8", "model.compile_steps=2", "task.length=5",
        "task.val_size=16", "trainer.batch_size=8", "trainer.steps=3", "trainer.eval_every=3",
        "trainer.log_every=1", "trainer.threads=1", "trainer.progress=false", "gradflow.every=0",
        "tracking.wandb_mode=disabled",
    ]  # fmt: skip
    found = {}
    for flag in ("false", "true"):
        run_dir = tmp_path / flag
        done = subprocess.run(
            [sys.executable, *common, f"model.compile={flag}", "--run-dir", str(run_dir)],
            capture_output=True, text=True, env=env, timeout=600, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "cannot be compiled" not in done.stderr
        # the slow first step is announced, and only where it comes
        assert ("model.compile: torch.compile compiles blocks of 2 steps" in done.stderr) == (
            flag == "true"
        )
        found[flag] = losses(run_dir / "metrics.jsonl")
    assert any(cache.rglob("*")), "inductor compiled nothing"
    assert len(found["true"]) >= 4  # three training steps and the evaluation
    assert found["true"] == pytest.approx(found["false"], rel=1e-4)


def losses(path: Path) -> list[float]:
    """Every loss (training and validation) in a metrics.jsonl, in order."""
    rows = read_jsonl(path)
    return [v for r in rows for k, v in sorted(r.items()) if "loss" in k and isinstance(v, float)]
