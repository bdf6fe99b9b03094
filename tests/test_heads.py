"""Heads learn tiny tasks, the language model samples, a cell plugin defined here
runs through every head, and rnnzoo.build_model works without the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import rnnzoo
from rnnzoo import Activation, Batch, Cell, State, TaskSpec, hookimpl
from rnnzoo.adapters import RealInput, TokenEmbedding
from rnnzoo.config import ModelConfig
from rnnzoo.errors import ConfigError, UsageError
from rnnzoo.model import RNNModel
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo_plugins.cells.lstm import LSTMCell

VOCAB = 5


class GatedCell(Cell):
    """A plugin cell: h' = (1 - f) * h + f * g(W x + U h), f a sigmoid gate."""

    def __init__(
        self, input_size: int, hidden_size: int, activation: Activation, gate_bias: float = 0.0
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.activation = activation
        self.gate = nn.Linear(input_size + hidden_size, hidden_size)
        self.candidate = nn.Linear(input_size + hidden_size, hidden_size)
        nn.init.constant_(self.gate.bias, gate_bias)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        both = torch.cat([x_t, h], -1)
        f = torch.sigmoid(self.gate(both))
        h = (1 - f) * h + f * self.activation(self.candidate(both))
        return h, (h,)


class CellPlugin:
    @hookimpl
    def rnnzoo_cells(self) -> dict[str, Any]:
        return {"test_gated": GatedCell}


@pytest.fixture(scope="module")
def registry() -> Registry:
    pm = plugin_manager()
    pm.register(CellPlugin(), name="test-cells")
    return Registry(pm)


# -- tiny tasks -----------------------------------------------------------------


@dataclass(frozen=True)
class TinyTask:
    """A batch generator, the head it is for, and the loss a model must reach."""

    head: str
    spec: TaskSpec
    make: Callable[[torch.Generator, int], Batch]
    target_loss: float
    bidirectional: bool = False


def _tokens(gen: torch.Generator, size: int, steps: int = 7) -> tuple[Tensor, Tensor]:
    lengths = torch.randint(2, steps + 1, (size,), generator=gen)
    lengths[0] = steps
    return torch.randint(0, VOCAB, (size, steps), generator=gen), lengths


def first_token(gen: torch.Generator, size: int) -> Batch:
    """Encoder: name the first token, read after the last real one."""
    inputs, lengths = _tokens(gen, size)
    return Batch(inputs=inputs, targets=inputs[:, 0], lengths=lengths)


def padded_sum(gen: torch.Generator, size: int) -> Batch:
    """Encoder, regression: a quarter of the sum of the real values."""
    steps = 8
    lengths = torch.randint(1, steps + 1, (size,), generator=gen)
    values = torch.rand(size, steps, 1, generator=gen)
    real = torch.arange(steps)[None, :] < lengths[:, None]
    target = (values[..., 0] * real).sum(1, keepdim=True) / 4
    return Batch(inputs=values, targets=target, lengths=lengths)


def previous_token(gen: torch.Generator, size: int) -> Batch:
    """Transducer: at each step, the token one step back (0 at the first)."""
    inputs, lengths = _tokens(gen, size)
    targets = torch.cat([torch.zeros(size, 1, dtype=torch.long), inputs[:, :-1]], 1)
    padded = torch.arange(inputs.shape[1])[None, :] >= lengths[:, None]
    # garbage in the padding: the loss must ignore it
    targets = torch.where(padded, torch.randint(0, VOCAB, targets.shape, generator=gen), targets)
    return Batch(inputs=inputs, targets=targets, lengths=lengths)


def next_token(gen: torch.Generator, size: int) -> Batch:
    """Needs the backward direction: at each step the next real token, and the
    class VOCAB ("end") at the last real step."""
    inputs, lengths = _tokens(gen, size)
    targets = torch.cat([inputs[:, 1:], torch.zeros(size, 1, dtype=torch.long)], 1)
    last = torch.arange(inputs.shape[1])[None, :] == lengths[:, None] - 1
    return Batch(inputs=inputs, targets=targets.masked_fill(last, VOCAB), lengths=lengths)


LM_VOCAB, LM_CYCLE = 8, 4


def counting(gen: torch.Generator, size: int) -> Batch:
    """Language model: 0 1 2 3 0 1 ... from a random start; tokens 4..7 never occur."""
    start = torch.randint(0, LM_CYCLE, (size, 1), generator=gen)
    sequence = (start + torch.arange(13)[None, :]) % LM_CYCLE
    return Batch(inputs=sequence[:, :-1], targets=sequence[:, 1:])


TASKS = {
    "sequence": TinyTask(
        "sequence", TaskSpec("tokens", VOCAB, "classes", VOCAB, per_token=False), first_token, 0.05
    ),
    "sequence-regression": TinyTask(
        "sequence",
        TaskSpec("real", 1, "real", 1, per_token=False),
        padded_sum,
        0.005,
        bidirectional=True,
    ),
    "per_token": TinyTask(
        "per_token", TaskSpec("tokens", VOCAB, "classes", VOCAB, True), previous_token, 0.05
    ),
    "bidirectional": TinyTask(
        "bidirectional", TaskSpec("tokens", VOCAB, "classes", VOCAB + 1, True), next_token, 0.05
    ),
    "lm": TinyTask("lm", TaskSpec("tokens", LM_VOCAB, "classes", LM_VOCAB, True), counting, 0.02),
}


def mean_loss(model: RNNModel, batch: Batch) -> Tensor:
    loss_sum, count = model.loss(model(batch).predictions, batch)
    return loss_sum / count


def train(model: RNNModel, task: TinyTask, steps: int, lr: float = 0.02) -> float:
    """Adam on fresh batches; the mean loss on held-out data afterwards."""
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = mean_loss(model, task.make(gen, 32))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return float(mean_loss(model, task.make(torch.Generator().manual_seed(99), 512)))


def build(task: TinyTask, registry: Registry, cell: str, **kwargs: Any) -> RNNModel:
    torch.manual_seed(0)
    kwargs = {"hidden_size": 24, "input_dim": 8, "bidirectional": task.bidirectional, **kwargs}
    return rnnzoo.build_model(task.spec, cell=cell, head=task.head, registry=registry, **kwargs)


# -- heads learn ------------------------------------------------------------------


TRAIN_STEPS = 100
#: each head with a built-in cell, and with the cell plugin defined above
RUNS = [("sequence", "lstm"), ("sequence-regression", "gru"), ("per_token", "gru")]
RUNS += [("bidirectional", "lstm"), ("lm", "lstm")] + [(name, "test_gated") for name in TASKS]


@pytest.mark.parametrize(("name", "cell"), RUNS)
def test_head_learns_its_tiny_task(registry: Registry, name: str, cell: str) -> None:
    task = TASKS[name]
    model = build(task, registry, cell)
    assert model.recurrence.directions == (
        2 if task.bidirectional or name == "bidirectional" else 1
    )
    before = train(model, task, steps=0)
    after = train(model, task, steps=TRAIN_STEPS)
    assert after < task.target_loss < before, f"{name} with {cell}: {before:.3f} -> {after:.4f}"


def test_bidirectional_head_needs_the_backward_direction(registry: Registry) -> None:
    """The same next-token labels are out of reach for a forward-only tagger."""
    task = replace(TASKS["bidirectional"], head="per_token")
    assert train(build(task, registry, "lstm"), task, steps=TRAIN_STEPS // 2) > 0.5


def test_per_token_loss_counts_real_tokens_only(registry: Registry) -> None:
    task = TASKS["per_token"]
    model = build(task, registry, "lstm")
    batch = task.make(torch.Generator().manual_seed(0), 16)
    predictions = model(batch).predictions
    loss_sum, count = model.loss(predictions, batch)
    assert batch.lengths is not None and int(count) == int(batch.lengths.sum())
    padded = ~batch.mask()
    changed = replace(
        batch, targets=torch.where(padded, (batch.targets + 1) % VOCAB, batch.targets)
    )
    assert torch.equal(model.loss(predictions, changed)[0], loss_sum)


def test_sequence_head_scores_only_sequences_that_end(registry: Registry) -> None:
    """In a truncated-BPTT window only the sequences ending inside it count."""
    task = TASKS["sequence"]
    model = build(task, registry, "lstm")
    batch = task.make(torch.Generator().manual_seed(0), 8)
    predictions = model(batch).predictions
    full_sum, full_count = model.loss(predictions, batch)
    ends = torch.tensor([True, False] * 4)
    part_sum, part_count = model.loss(predictions, replace(batch, ends=ends))
    assert int(full_count) == 8 and int(part_count) == 4
    assert 0 < float(part_sum.detach()) < float(full_sum.detach())


# -- the language model samples -------------------------------------------------------


@pytest.fixture(scope="module")
def lm(registry: Registry) -> RNNModel:
    model = build(TASKS["lm"], registry, "lstm")
    assert train(model, TASKS["lm"], steps=TRAIN_STEPS) < TASKS["lm"].target_loss
    return model


def sample(model: RNNModel, prompt: list[int], length: int, **kwargs: Any) -> list[int]:
    generator = torch.Generator().manual_seed(kwargs.pop("seed", 0))
    out = model.head.sample(model, prompt, length, generator=generator, **kwargs)  # type: ignore[operator]
    assert isinstance(out, list) and len(out) == length
    assert all(isinstance(t, int) and 0 <= t < LM_VOCAB for t in out)
    return out


def replayed_logits(model: RNNModel, prompt: list[int], out: list[int]) -> Tensor:
    """The logits every sampled token was drawn from, recomputed in one pass."""
    tokens = torch.tensor([prompt + out])
    with torch.no_grad():
        logits = model(Batch(inputs=tokens, targets=tokens)).predictions[0]
    return logits[len(prompt) - 1 : -1]


def test_top_k_one_is_greedy(lm: RNNModel) -> None:
    prompt = [1, 2]
    out = sample(lm, prompt, 12, top_k=1, temperature=5.0)
    logits = replayed_logits(lm, prompt, out)
    best, second = logits.topk(2, -1).values.unbind(-1)
    assert float((best - second).min()) > 1e-3  # no near-tie for rounding to break
    assert out == logits.argmax(-1).tolist()
    assert out == [(3 + i) % LM_CYCLE for i in range(12)]


def test_low_temperature_is_greedy(lm: RNNModel) -> None:
    greedy = sample(lm, [0], 20, top_k=1)
    assert sample(lm, [0], 20, temperature=1e-4, seed=3) == greedy


def test_temperature_flattens_the_distribution(lm: RNNModel) -> None:
    """The model never saw tokens 4..7: at temperature 1 it (almost) never picks
    them, at temperature 100 it picks them about half the time."""
    unseen = [
        sum(t >= LM_CYCLE for t in sample(lm, [0], 200, temperature=temperature))
        for temperature in (1.0, 100.0)
    ]
    assert unseen[0] <= 10 and 60 <= unseen[1] <= 140


def test_top_k_keeps_the_k_most_likely(lm: RNNModel) -> None:
    prompt = [2]
    out = sample(lm, prompt, 100, top_k=2, temperature=100.0)
    logits = replayed_logits(lm, prompt, out)
    # the 2nd and 3rd most likely are never within rounding of each other: the
    # sampler's top 2, computed step by step, is the replay's on every CPU
    ranked = logits.topk(3, -1).values
    assert float((ranked[:, 1] - ranked[:, 2]).min()) > 1e-3
    top2 = logits.topk(2, -1).indices
    assert all(t in pair for t, pair in zip(out, top2.tolist(), strict=True))
    best = top2[:, 0].tolist()
    assert 20 < sum(t != b for t, b in zip(out, best, strict=True)) < 80, (
        "both of the top 2 are drawn"
    )


def test_sampling_is_reproducible_and_leaves_the_model_as_it_was(lm: RNNModel) -> None:
    lm.train()
    assert sample(lm, [0, 1], 30, seed=7) == sample(lm, [0, 1], 30, seed=7)
    assert lm.training
    lm.eval()
    with pytest.raises(UsageError, match="prompt"):
        sample(lm, [], 3)
    with pytest.raises(UsageError, match="top_k"):
        sample(lm, [0], 3, top_k=0)


# -- the Python API -----------------------------------------------------------------


def test_build_model_from_names_without_the_cli() -> None:
    spec = TaskSpec("tokens", 11, "classes", 3, per_token=True)
    model = rnnzoo.build_model(
        spec,
        cell="lstm",
        head="per_token",
        hidden_size=16,
        num_layers=2,
        bidirectional=True,
        input_dim=6,
        cell_args={"forget_bias": 2.0},
    )
    assert isinstance(model, RNNModel) and isinstance(model.adapter, TokenEmbedding)
    assert len(model.cells()) == 4 and all(isinstance(c, LSTMCell) for c in model.cells())
    assert [c.input_size for c in model.cells()] == [6, 6, 32, 32]
    assert float(model.cells()[0].bias_ih[16].detach()) == 2.0
    batch = Batch(
        inputs=torch.randint(0, 11, (3, 5)),
        targets=torch.randint(0, 3, (3, 5)),
        lengths=torch.tensor([5, 2, 4]),
    )
    out = model(batch)
    assert out.predictions.shape == (3, 5, 3) and len(out.final_state) == 4
    loss_sum, count = model.loss(out.predictions, batch)
    assert int(count) == 11
    loss_sum.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_build_model_from_a_config_section() -> None:
    config = ModelConfig(cell="gru", head="bidirectional", hidden_size=8, num_layers=2)
    spec = TaskSpec("tokens", 4, "classes", 2, per_token=True)
    model = rnnzoo.build_model(spec, **asdict(config))
    assert len(model.cells()) == 4 and model.recurrence.output_size == 16


def test_build_model_options() -> None:
    real = TaskSpec("real", 2, "real", 1, per_token=False)
    model = rnnzoo.build_model(real, cell="elman", activation="relu", head="sequence")
    assert isinstance(model.adapter, RealInput) and model.adapter.output_size == 2
    assert type(model.cells()[0].activation).__name__ == "ReLU"
    projected = rnnzoo.build_model(real, cell="gru", input_dim=7, hidden_size=4)
    assert projected.cells()[0].input_size == 7
    tags = TaskSpec("tokens", 4, "classes", 2, per_token=True)
    # a head that needs both directions makes the recurrence bidirectional
    assert rnnzoo.build_model(tags, head="bidirectional").recurrence.directions == 2
    leaky = rnnzoo.build_model(
        tags,
        cell="elman",
        head="per_token",
        activation="leaky_relu",
        activation_args={"negative_slope": 0.3},
    )
    assert leaky.cells()[0].activation.negative_slope == 0.3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"cell": "lstn"}, UsageError, "Did you mean 'lstm'"),
        ({"head": "sequence"}, ConfigError, "per sequence"),
        ({"head": "lm", "bidirectional": True}, ConfigError, "left to right"),
        ({"cell_args": {"forget": 1.0}}, ConfigError, "forget_bias"),
        ({"activation": "tanhh", "cell": "elman"}, UsageError, "Did you mean 'tanh'"),
        ({"hidden_size": 0}, ConfigError, "hidden_size"),
        ({"dropout": 1.0}, ConfigError, "dropout"),
    ],
)
def test_build_model_explains_mistakes(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    spec = TaskSpec("tokens", 4, "classes", 2, per_token=True)
    with pytest.raises(error, match=message):
        rnnzoo.build_model(spec, **{"head": "per_token", **kwargs})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_trains_and_samples_on_cuda(registry: Registry) -> None:
    task = TASKS["lm"]
    model = build(task, registry, "lstm").to("cuda")
    gen = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(3):
        loss = mean_loss(model, task.make(gen, 8).to("cuda"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    assert len(sample(model, [0, 1], 5, top_k=2)) == 5
