"""Truncated BPTT(k1, k2): the trainer's gradients against references written
here with plain torch.nn.LSTM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnzoo import Batch, Task, TaskSpec, Window, config, hookimpl
from rnnzoo.errors import ConfigError
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest, and identically in every process, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class EchoStream(Task):
    """A stream task: each row is one long token sequence cut into consecutive
    batches; the target at step t is the token ``delay`` steps earlier, so a
    model must carry its state across batch boundaries."""

    def __init__(self, seed: int = 0, steps: int = 9, rows: int = 3, delay: int = 2) -> None:
        self.spec = TaskSpec("tokens", 5, "classes", 5, per_token=True, stream=True)
        self.steps, self.rows, self.delay = steps, rows, delay
        generator = torch.Generator().manual_seed(seed)
        self.data = torch.randint(0, 5, (rows, 100_000), generator=generator)

    def chunk(self, index: int) -> Batch:
        start = self.delay + index * self.steps
        inputs = self.data[:, start : start + self.steps]
        targets = self.data[:, start - self.delay : start - self.delay + self.steps]
        return Batch(inputs=inputs, targets=targets)

    def train_batch(self, index: int, batch_size: int) -> Batch:
        return self.chunk(index)

    def val_batches(self, batch_size: int) -> Iterator[Batch]:
        for i in range(3):
            yield self.chunk(5000 + i)


class StreamPlugin:
    @hookimpl
    def rnnzoo_tasks(self) -> dict[str, Any]:
        return {"echo_stream": EchoStream}


def registry_with_stream() -> Registry:
    pm = plugin_manager()
    pm.register(StreamPlugin(), name="echo-stream")
    return Registry(pm)


REGISTRY = registry_with_stream()
QUIET = ["tracking.wandb_mode=disabled", "trainer.progress=false", "gradflow.every=0"]
TASKS = {
    # a sequence task (one target at the end) and a per-token task
    "adding": ["task.name=adding", "task.length=12", "model.head=sequence"],
    "copy_memory": [
        "task.name=copy_memory",
        "task.length=2",
        "model.head=per_token",
        "model.input_dim=4",
    ],
    "echo_stream": ["task.name=echo_stream", "model.head=per_token", "model.input_dim=4"],
}


def trainer(tmp_path: Path, task: str, *overrides: str) -> Trainer:
    args = [*QUIET, *TASKS[task], "model.hidden_size=5", "trainer.batch_size=3", *overrides]
    return Trainer(config.load(None, args), REGISTRY, tmp_path / "run")


class Twin:
    """The trainer's LSTM model rebuilt from torch.nn parts with the same weights."""

    def __init__(self, model: nn.Module, per_token: bool) -> None:
        cell = model.recurrence.cells[0]
        self.lstm = nn.LSTM(cell.input_size, cell.hidden_size, batch_first=True)
        self.head = nn.Linear(cell.hidden_size, model.head.spec.output_size)
        self.embed = nn.Embedding(1, 1)
        self.per_token = per_token
        self.names = {
            "recurrence.cells.0.weight_ih": self.lstm.weight_ih_l0,
            "recurrence.cells.0.weight_hh": self.lstm.weight_hh_l0,
            "recurrence.cells.0.bias_ih": self.lstm.bias_ih_l0,
            "recurrence.cells.0.bias_hh": self.lstm.bias_hh_l0,
            "head.project.weight": self.head.weight,
            "head.project.bias": self.head.bias,
        }
        if hasattr(model.adapter, "embedding"):
            self.embed = nn.Embedding.from_pretrained(model.adapter.embedding.weight, freeze=False)
            self.names["adapter.embedding.weight"] = self.embed.weight
        else:
            self.embed = None
        own = dict(model.named_parameters())
        with torch.no_grad():
            for name, p in self.names.items():
                p.copy_(own[name])

    def run(self, inputs: torch.Tensor, state=None):
        x = self.embed(inputs) if self.embed is not None else inputs.float()
        return self.lstm(x, state)

    def loss_sum(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token cross-entropy, or squared error of the last step's output."""
        if self.per_token:
            logits = self.head(outputs)
            return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
        return (self.head(outputs[:, -1]).squeeze(-1) - targets).pow(2).sum()

    def grads(self) -> dict[str, torch.Tensor]:
        return {n: p.grad for n, p in self.names.items()}

    def zero_grad(self) -> None:
        for p in self.names.values():
            p.grad = None


def items(task: str, batch: Batch) -> int:
    return batch.num_tokens() if task != "adding" else batch.batch_size


def window_ends(steps: int, k1: int) -> list[int]:
    return list(range(k1, steps, k1)) + [steps]


def assert_same_grads(model: nn.Module, want: dict[str, torch.Tensor], exact: bool = False):
    for name, p in model.named_parameters():
        if exact:
            assert torch.equal(p.grad, want[name]), name
        else:
            torch.testing.assert_close(p.grad, want[name], atol=1e-6, rtol=1e-5, msg=name)


def test_plan_windows():
    tbptt = REGISTRY.get("controller", "tbptt").build({"k1": 4, "k2": 6}, "controllers.tbptt")
    assert tbptt.plan_windows(10) == [Window(0, 0, 4), Window(2, 4, 8), Window(6, 8, 10)]
    same = REGISTRY.get("controller", "tbptt").build({"k1": 4}, "controllers.tbptt")
    assert same.plan_windows(8) == [Window(0, 0, 4), Window(4, 4, 8)]
    assert same.plan_windows(3) == [Window(0, 0, 3)]


@pytest.mark.parametrize("task", ["adding", "copy_memory"])
@pytest.mark.parametrize("fused", [True, False])
def test_k1_equals_k2_equals_T_is_full_bptt(tmp_path, task, fused):
    plain = trainer(tmp_path, task, f"model.fused={fused}")
    batch = plain.task.train_batch(0, 3)
    T = batch.steps
    plain.forward_backward(batch)
    full = {n: p.grad.clone() for n, p in plain.model.named_parameters()}
    for k in (T, T + 5):
        t = trainer(tmp_path, task, f"model.fused={fused}", f"controllers.tbptt.k1={k}")
        t.forward_backward(batch)
        assert_same_grads(t.model, full, exact=True)
    # and full BPTT is what torch.nn computes
    twin = Twin(plain.model, task != "adding")
    out, _ = twin.run(batch.inputs)
    (twin.loss_sum(out, batch.targets) / items(task, batch)).backward()
    assert_same_grads(plain.model, twin.grads())


@pytest.mark.parametrize("task", ["adding", "copy_memory"])
def test_k1_equals_k2_is_chunk_and_detach(tmp_path, task):
    k = 5
    t = trainer(tmp_path, task, f"controllers.tbptt.k1={k}")
    batch = t.task.train_batch(0, 3)
    twin = Twin(t.model, task != "adding")
    loss = t.forward_backward(batch)

    state, total = None, 0.0
    for start in range(0, batch.steps, k):
        stop = min(start + k, batch.steps)
        out, state = twin.run(batch.inputs[:, start:stop], state)
        if twin.per_token:
            part = twin.loss_sum(out, batch.targets[:, start:stop])
        elif stop == batch.steps:  # the sequence's one target comes at its end
            part = twin.loss_sum(out, batch.targets)
        else:
            part = None
        if part is not None:
            (part / items(task, batch)).backward()
            total += float(part.detach())
        state = tuple(s.detach() for s in state)
    assert loss == pytest.approx(total, rel=1e-5)
    assert_same_grads(t.model, twin.grads())


def recompute_windows(twin, inputs, targets, k1, k2, n_items, before=None):
    """TBPTT(k1, k2) the slow, obvious way: for the losses of steps [p, e) (k1 of
    them, fewer at the end), the state at p - (k2 - k1) is recomputed from the very
    beginning without a graph, then the steps up to e run with a graph and the
    losses flow back."""
    steps = inputs.shape[1]
    previous = 0
    for end in window_ends(steps, k1):
        start = max(0, previous - (k2 - k1))
        with torch.no_grad():
            state = before
            if start > 0 or before is not None:
                full = (
                    inputs[:, :start]
                    if before is None
                    else torch.cat([before[0], inputs[:, :start]], 1)
                )
                state = twin.run(full)[1] if full.shape[1] else None
        out, _ = twin.run(inputs[:, start:end], state)
        if twin.per_token:
            lost = previous - start
            part = twin.loss_sum(out[:, lost:], targets[:, previous:end])
        elif end == steps:
            part = twin.loss_sum(out, targets)
        else:
            part = None
        if part is not None:
            (part / n_items).backward()
        previous = end


@pytest.mark.parametrize("task", ["adding", "copy_memory"])
def test_k2_greater_than_k1_recomputes_the_overlap(tmp_path, task):
    k1, k2 = 4, 7
    t = trainer(tmp_path, task, f"controllers.tbptt.k1={k1}", f"controllers.tbptt.k2={k2}")
    batch = t.task.train_batch(0, 3)
    twin = Twin(t.model, task != "adding")
    t.forward_backward(batch)
    recompute_windows(twin, batch.inputs, batch.targets, k1, k2, items(task, batch))
    assert_same_grads(t.model, twin.grads())
    # the overlap matters: plain chunk-and-detach gives other gradients
    chunked = trainer(tmp_path, task, f"controllers.tbptt.k1={k1}")
    chunked.forward_backward(batch)
    differs = [
        not torch.allclose(a.grad, b.grad)
        for a, b in zip(t.model.parameters(), chunked.model.parameters(), strict=True)
    ]
    assert any(differs)


@pytest.mark.parametrize("k1, k2", [(3, 3), (2, 5)])
def test_stream_state_is_carried_across_batches(tmp_path, k1, k2):
    t = trainer(tmp_path, "echo_stream", f"controllers.tbptt.k1={k1}", f"controllers.tbptt.k2={k2}")
    twin = Twin(t.model, per_token=True)
    seen = []
    for index in range(3):
        batch = t.task.train_batch(index, 3)
        t.forward_backward(batch)
        prefix = torch.cat(seen, 1) if seen else None
        recompute_windows(
            twin,
            batch.inputs,
            batch.targets,
            k1,
            k2,
            batch.num_tokens(),
            before=None if prefix is None else (prefix,),
        )
        assert_same_grads(t.model, twin.grads())
        t.model.zero_grad(set_to_none=True)
        twin.zero_grad()
        seen.append(batch.inputs)
    # the carried state is the state after the whole stream so far, detached
    _, (h, c) = twin.run(torch.cat(seen, 1))
    torch.testing.assert_close(t.state.carried[0][0], h[0].detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(t.state.carried[0][1], c[0].detach(), atol=1e-6, rtol=1e-5)
    assert not t.state.carried[0][0].requires_grad


def test_stream_without_tbptt_carries_state_too(tmp_path):
    t = trainer(tmp_path, "echo_stream")
    twin = Twin(t.model, per_token=True)
    first, second = t.task.train_batch(0, 3), t.task.train_batch(1, 3)
    t.forward_backward(first)
    t.model.zero_grad(set_to_none=True)
    t.forward_backward(second)
    with torch.no_grad():
        _, state = twin.run(first.inputs)
    out, _ = twin.run(second.inputs, state)
    (twin.loss_sum(out, second.targets) / second.num_tokens()).backward()
    assert_same_grads(t.model, twin.grads())


def test_bad_windows_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="k2"):
        trainer(tmp_path, "adding", "controllers.tbptt.k1=5", "controllers.tbptt.k2=3")
    with pytest.raises(ConfigError, match="k1"):
        trainer(tmp_path, "adding", "controllers.tbptt.k1=0")
    with pytest.raises(ConfigError, match="bidirectional"):
        trainer(tmp_path, "copy_memory", "model.head=bidirectional", "controllers.tbptt.k1=4")
