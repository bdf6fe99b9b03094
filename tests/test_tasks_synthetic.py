"""The synthetic long-range tasks: what they generate, their baselines, determinism."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from rnnzoo.errors import ConfigError
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry

REGISTRY = Registry(plugin_manager())


def make(name: str, seed: int = 0, **args: object):
    return REGISTRY.get("task", name).build(args, "task", seed=seed)


def test_adding_layout_and_target():
    task = make("adding", length=30)
    batch = task.train_batch(0, 256)
    values, markers = batch.inputs[..., 0], batch.inputs[..., 1]
    assert batch.inputs.shape == (256, 30, 2)
    assert ((values >= 0) & (values < 1)).all()
    # exactly two markers, one in each half
    assert (markers.sum(1) == 2).all()
    assert (markers[:, :15].sum(1) == 1).all() and (markers[:, 15:].sum(1) == 1).all()
    torch.testing.assert_close(batch.targets, (values * markers).sum(1))


def test_adding_baseline_is_what_predicting_one_scores():
    task = make("adding", length=20)
    targets = torch.cat([task.train_batch(i, 1000).targets for i in range(20)])
    mse_of_one = float((targets - 1).pow(2).mean())
    assert task.baseline()["mse"] == pytest.approx(1 / 6)
    assert mse_of_one == pytest.approx(1 / 6, abs=0.005)


def test_copy_memory_layout():
    T = 7
    task = make("copy_memory", length=T)
    batch = task.train_batch(3, 64)
    x, y = batch.inputs, batch.targets
    assert x.shape == y.shape == (64, T + 20)
    data = x[:, :10]
    assert ((data >= 1) & (data <= 8)).all()
    # T - 1 blanks, the delimiter (9), then 10 blanks
    assert (x[:, 10 : T + 9] == 0).all()
    assert (x[:, T + 9] == 9).all()
    assert (x[:, T + 10 :] == 0).all()
    # blanks are the target until the last 10 steps, which repeat the data
    assert (y[:, :-10] == 0).all()
    assert torch.equal(y[:, -10:], data)


def test_copy_memory_baseline_is_the_memoryless_strategy():
    """Blank with certainty, then a uniform guess over the 8 symbols: that
    predictor's cross-entropy, computed on data, is 10 ln 8 / (T + 20)."""
    T = 30
    task = make("copy_memory", length=T)
    batch = task.train_batch(0, 16)
    logits = torch.full((16, T + 20, 9), -1e9)
    logits[:, :-10, 0] = 0.0
    logits[:, -10:, 1:] = 0.0
    ce = F.cross_entropy(logits.reshape(-1, 9), batch.targets.reshape(-1))
    base = task.baseline()
    assert float(ce) == pytest.approx(base["loss"], rel=1e-6)
    assert base["loss"] == pytest.approx(10 * math.log(8) / (T + 20))
    assert base["acc"] == 1 / 8


def test_temporal_order_layout_and_classes():
    T = 50
    task = make("temporal_order", length=T)
    batch = task.train_batch(1, 512)
    x, y = batch.inputs, batch.targets
    relevant = x >= 4
    assert (relevant.sum(1) == 2).all()
    where = relevant.nonzero()[:, 1].view(-1, 2)
    assert ((where[:, 0] >= 5) & (where[:, 0] < 10)).all()  # 10-20 % of T
    assert ((where[:, 1] >= 25) & (where[:, 1] < 30)).all()  # 50-60 % of T
    symbols = x[relevant].view(-1, 2) - 4  # 0 for X, 1 for Y, in order
    assert torch.equal(y, symbols[:, 0] * 2 + symbols[:, 1])
    assert set(y.tolist()) == {0, 1, 2, 3}
    assert task.baseline() == {"loss": pytest.approx(math.log(4)), "acc": 0.25}


@pytest.mark.parametrize("name", ["adding", "copy_memory", "temporal_order"])
def test_generation_is_a_function_of_seed_and_index(name):
    a, b = make(name, length=12), make(name, length=12)
    assert torch.equal(a.train_batch(5, 8).inputs, b.train_batch(5, 8).inputs)
    # the order of requests does not matter (a resumed run sees the same data)
    later = a.train_batch(7, 8).inputs
    assert torch.equal(b.train_batch(7, 8).inputs, later)
    assert not torch.equal(a.train_batch(5, 8).inputs, a.train_batch(6, 8).inputs)
    other_seed = make(name, length=12, seed=1)
    assert not torch.equal(other_seed.train_batch(5, 8).inputs, a.train_batch(5, 8).inputs)


@pytest.mark.parametrize("name", ["adding", "copy_memory", "temporal_order"])
def test_validation_set_is_fixed(name):
    """The same examples for any batch size and any training seed."""
    task = make(name, length=12, val_size=50)
    whole = torch.cat([b.inputs for b in task.val_batches(50)])
    assert whole.shape[0] == 50
    for batch_size in (7, 64):
        again = torch.cat([b.inputs for b in task.val_batches(batch_size)])
        assert torch.equal(again, whole)
    other = make(name, length=12, val_size=50, seed=3)
    assert torch.equal(torch.cat([b.inputs for b in other.val_batches(16)]), whole)
    # and it is not a training batch
    assert not torch.equal(task.train_batch(0, 50).inputs, whole)


def test_bad_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="task.length"):
        make("adding", length=1)
    with pytest.raises(ConfigError, match="task.val_size"):
        make("copy_memory", val_size=0)
    with pytest.raises(ConfigError, match="task.length"):
        make("temporal_order", length=5)
