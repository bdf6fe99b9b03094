"""Each clipping controller against a reference computed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from jsonl import read_jsonl
from torch import nn

from rnnzoo import config
from rnnzoo.errors import ConfigError
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer

REGISTRY = Registry(plugin_manager())
QUIET = ["tracking.wandb_mode=disabled", "trainer.progress=false", "gradflow.every=0"]


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest, and identically in every process, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def controller(name: str, **params: object):
    return REGISTRY.get("controller", name).build(params, f"controllers.{name}")


def trainer(tmp_path: Path, *overrides: str) -> Trainer:
    return Trainer(config.load(None, [*QUIET, *overrides]), REGISTRY, tmp_path / "run")


def model_with_grads(scale: float = 1.0, seed: int = 0) -> nn.Module:
    """A weight matrix, a bias and an embedding, with known random gradients."""
    torch.manual_seed(seed)
    model = nn.ModuleDict({"linear": nn.Linear(5, 4), "embed": nn.Embedding(6, 3)})
    for p in model.parameters():
        p.grad = torch.randn_like(p) * scale
    return model


def grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("max_norm, clips", [(0.5, True), (1e3, False)])
def test_clip_norm(max_norm, clips):
    model = model_with_grads()
    before = grads(model)
    norm = sum(float((g.double() ** 2).sum()) for g in before) ** 0.5
    stats = controller("clip_norm", max_norm=max_norm).after_backward(model)
    factor = max_norm / (norm + 1e-6) if norm > max_norm else 1.0
    for g, p in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g * factor)
    assert stats["norm_preclip"] == pytest.approx(norm, rel=1e-6)
    assert stats["clipped"] == float(clips)
    if clips:
        after = sum(float((p.grad.double() ** 2).sum()) for p in model.parameters()) ** 0.5
        assert after == pytest.approx(max_norm, rel=1e-5)


@pytest.mark.parametrize("limit, clips", [(0.3, True), (100.0, False)])
def test_clip_value(limit, clips):
    model = model_with_grads()
    before = grads(model)
    norm = sum(float((g.double() ** 2).sum()) for g in before) ** 0.5
    stats = controller("clip_value", clip_value=limit).after_backward(model)
    for g, p in zip(before, model.parameters(), strict=True):
        expected = torch.tensor([min(max(v, -limit), limit) for v in g.flatten().tolist()])
        torch.testing.assert_close(p.grad.flatten(), expected)
    assert stats["norm_preclip"] == pytest.approx(norm, rel=1e-6)
    assert stats["clipped"] == float(clips)


def test_clip_adaptive_unit_by_unit():
    """AGC (Brock et al. 2021): row i of a weight matrix is rescaled to
    clipping * max(||W_i||, eps) when ||G_i|| exceeds it; a bias vector is one unit."""
    clipping, eps = 0.5, 1e-3
    model = model_with_grads(scale=0.3)
    with torch.no_grad():
        model["embed"].weight[2].zero_()  # a unit whose weights are zero: eps applies
    before = grads(model)
    stats = controller("clip_adaptive", clipping=clipping, eps=eps).after_backward(model)
    units = clipped = 0
    for g, p in zip(before, model.parameters(), strict=True):
        w = p.detach()
        rows = [(w, g)] if w.dim() == 1 else list(zip(w, g, strict=True))
        expected = []
        for w_row, g_row in rows:
            limit = clipping * max(float(w_row.norm()), eps)
            g_norm = float(g_row.norm())
            # far from the limit: float rounding cannot decide whether it clips
            assert abs(g_norm / limit - 1) > 1e-3
            units += 1
            if g_norm > limit:
                clipped += 1
                expected.append(g_row * (limit / g_norm))
            else:
                expected.append(g_row)
        want = expected[0] if w.dim() == 1 else torch.stack(expected)
        torch.testing.assert_close(p.grad, want)
    assert 0 < clipped < units, "the case must mix clipped and untouched units"
    assert stats["clipped"] == 1.0
    assert stats["unit_clip_fraction"] == pytest.approx(clipped / units)
    norm = sum(float((g.double() ** 2).sum()) for g in before) ** 0.5
    assert stats["norm_preclip"] == pytest.approx(norm, rel=1e-6)


def elman_bptt_by_hand(model, batch, items, mode=None, m=None):
    """Backpropagation through time for a tanh Elman RNN with a per-token
    softmax head, written out step by step (no autograd), clipping dL/dh_t
    before it flows into step t - 1: each element to [-m, m] (``mode='value'``)
    or each sequence's vector to a norm of at most m (``mode='norm'``); no
    clipping when ``mode`` is None. Returns the gradients by parameter name, the
    largest per-sequence norm and largest element of each step's dL/dh_t before
    clipping, the share of steps that clipping changed, and every per-sequence
    norm and element magnitude, by mode: the values a clipper compares with m."""
    p = {n: t.detach().double() for n, t in model.named_parameters()}
    E = p["adapter.embedding.weight"]
    W_ih, W_hh = p["recurrence.cells.0.weight_ih"], p["recurrence.cells.0.weight_hh"]
    b = p["recurrence.cells.0.bias_ih"] + p["recurrence.cells.0.bias_hh"]
    W_o, b_o = p["head.project.weight"], p["head.project.bias"]
    ids, targets = batch.inputs, batch.targets
    B, T = ids.shape
    x = E[ids]
    hs = [torch.zeros(B, W_hh.shape[0], dtype=torch.float64)]
    for t in range(T):
        hs.append(torch.tanh(x[:, t] @ W_ih.T + hs[-1] @ W_hh.T + b))
    g = {n: torch.zeros_like(t) for n, t in p.items()}
    carry = torch.zeros_like(hs[0])
    norms, elements, changed = [], [], 0
    compared: dict[str, list[float]] = {"norm": [], "value": []}
    for t in reversed(range(T)):
        h = hs[t + 1]
        probs = torch.softmax(h @ W_o.T + b_o, -1)
        d_logits = (probs - nn.functional.one_hot(targets[:, t], probs.shape[-1])) / items
        g["head.project.weight"] += d_logits.T @ h
        g["head.project.bias"] += d_logits.sum(0)
        d_h = d_logits @ W_o + carry
        row_norms = d_h.norm(dim=-1, keepdim=True)
        norms.append(float(row_norms.max()))
        elements.append(float(d_h.abs().max()))
        compared["norm"] += row_norms.flatten().tolist()
        compared["value"] += d_h.abs().flatten().tolist()
        # which values exceed m is decided here, not by comparing the clipped
        # tensor with the original (m * (1 / m) need not be exactly 1)
        if mode == "value":
            changed += bool((d_h.abs() > m).any())
            d_h = d_h.clamp(-m, m)
        elif mode == "norm":
            over = row_norms > m
            changed += bool(over.any())
            d_h = torch.where(over, d_h * (m / row_norms), d_h)
        d_a = d_h * (1 - h**2)
        g["recurrence.cells.0.weight_hh"] += d_a.T @ hs[t]
        g["recurrence.cells.0.weight_ih"] += d_a.T @ x[:, t]
        g["recurrence.cells.0.bias_hh"] += d_a.sum(0)
        g["recurrence.cells.0.bias_ih"] += d_a.sum(0)
        g["adapter.embedding.weight"].index_add_(0, ids[:, t], d_a @ W_ih)
        carry = d_a @ W_hh
    return g, norms, elements, changed / T, compared


@pytest.mark.parametrize("mode", ["value", "norm"])
def test_clip_state_matches_bptt_by_hand(tmp_path, mode):
    """clip_state clips dL/dh_t at every step during backward (Graves 2013)."""
    base = [
        "task.name=copy_memory",
        "task.length=3",
        "model.cell=elman",
        "model.head=per_token",
        "model.hidden_size=6",
        "model.input_dim=5",
        "trainer.batch_size=4",
    ]
    t = trainer(tmp_path, *base)
    batch = t.task.train_batch(0, 4)
    items = batch.num_tokens()

    # a threshold that clips some steps and leaves others alone: halfway between
    # two steps' largest values, never on one (float32 rounding would decide)
    _, norms, elements, _, _ = elman_bptt_by_hand(t.model, batch, items)
    largest = sorted(set(elements if mode == "value" else norms))
    middle = len(largest) // 2
    m = (largest[middle - 1] + largest[middle]) / 2

    t = trainer(
        tmp_path,
        *base,
        f"controllers.clip_state.max_value={m}",
        f"controllers.clip_state.mode={mode}",
    )
    want, norms, _, fraction, compared = elman_bptt_by_hand(t.model, batch, items, mode, m)
    # every value compared with m, in the clipped run too, is far from it relative
    # to float32 rounding: each comparison has one answer on every CPU
    gap = min(abs(v - m) for v in compared[mode])
    assert gap > 1e-4 * m, f"threshold {m} is only {gap:.2e} from a compared value"
    assert 0 < fraction < 1
    t.forward_backward(batch)
    for name, param in t.model.named_parameters():
        torch.testing.assert_close(param.grad.double(), want[name], atol=1e-7, rtol=1e-5)
    stats = t.controllers[0][1].after_backward(t.model)
    assert stats["clipped"] == 1.0
    assert stats["norm_preclip"] == pytest.approx(max(norms), rel=1e-5)
    assert stats["step_clip_fraction"] == pytest.approx(fraction)


def test_controllers_compose_in_the_order_listed(tmp_path):
    """clip_value first, then clip_norm sees the value-clipped gradient."""
    t = trainer(
        tmp_path,
        "task.length=8",
        "model.hidden_size=8",
        "trainer.batch_size=8",
        "controllers.clip_value.clip_value=0.01",
        "controllers.clip_norm.max_norm=0.02",
    )
    assert [n for n, _ in t.controllers] == ["clip_value", "clip_norm"]
    t.forward_backward(t.task.train_batch(0, 8))
    raw = [p.grad.clone() for p in t.model.parameters()]
    metrics = {}
    t.optimizer_step(0.0, metrics)
    value_clipped = [g.clamp(-0.01, 0.01) for g in raw]
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in value_clipped])))
    assert metrics["grad/norm_preclip"] == pytest.approx(
        float(torch.linalg.vector_norm(torch.stack([g.norm() for g in raw]))), rel=1e-6
    )
    assert metrics["controller/clip_norm/norm_preclip"] == pytest.approx(norm, rel=1e-6)
    for g, p in zip(value_clipped, t.model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g * min(1.0, 0.02 / (norm + 1e-6)))


def test_every_clipping_controller_logs_norm_preclip_and_clipped(tmp_path):
    names = ["clip_norm", "clip_value", "clip_adaptive", "clip_state"]
    t = trainer(
        tmp_path,
        "task.length=6",
        "task.val_size=16",
        "model.hidden_size=8",
        "trainer.batch_size=8",
        "trainer.steps=4",
        "trainer.log_every=2",
        *[f"controllers.{n}={{}}" for n in names],
    )
    t.fit()
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert [r["step"] for r in rows] == [2, 4]
    for row in rows:
        for name in names:
            assert row[f"controller/{name}/norm_preclip"] >= 0
            assert row[f"controller/{name}/clipped"] in (0.0, 1.0)
        assert 0.0 <= row["clip/rate"] <= 1.0


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("clip_norm", {"max_norm": 0.0}, "clip_norm.max_norm"),
        ("clip_value", {"clip_value": -1.0}, "clip_value.clip_value"),
        ("clip_adaptive", {"clipping": 0.0}, "clip_adaptive.clipping"),
        ("clip_state", {"max_value": 0.0}, "clip_state.max_value"),
        ("clip_state", {"mode": "sideways"}, "mode"),
    ],
)
def test_bad_settings_are_config_errors(name, params, match):
    with pytest.raises(ConfigError, match=match):
        controller(name, **params)
