"""What the training step does with less work per step computes what it did before:
the unmasked loss, the fused optimizers, the
fused-kernel template holding the cell's own parameters and the settings
snapshot."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from rnnzoo import TaskSpec, config
from rnnzoo.head import summed_loss
from rnnzoo.training.optim import make_optimizer
from rnnzoo.training.settings import snapshot
from rnnzoo.training.state import same_implementation
from rnnzoo_plugins.cells.gru import GRUCell
from rnnzoo_plugins.cells.lstm import LSTMCell

CLASSES = TaskSpec(
    input_kind="tokens", input_size=5, output_kind="classes", output_size=7, per_token=True
)
REAL = TaskSpec(input_kind="real", input_size=2, output_kind="real", output_size=3, per_token=True)


@pytest.mark.parametrize("spec", [CLASSES, REAL], ids=["classes", "real"])
def test_unmasked_loss_is_the_masked_loss_with_every_item_kept(spec: TaskSpec) -> None:
    torch.manual_seed(0)
    predictions = torch.randn(4, 6, spec.output_size, dtype=torch.float64, requires_grad=True)
    if spec.output_kind == "classes":
        targets = torch.randint(0, spec.output_size, (4, 6))
    else:
        targets = torch.randn(4, 6, spec.output_size, dtype=torch.float64)
    keep = torch.ones(4, 6, dtype=torch.bool)

    fused, fused_count = summed_loss(predictions, targets, None, spec)
    (fused_grad,) = torch.autograd.grad(fused, predictions)
    masked, masked_count = summed_loss(predictions, targets, keep, spec)
    (masked_grad,) = torch.autograd.grad(masked, predictions)

    assert float(fused_count) == float(masked_count) == 24
    torch.testing.assert_close(fused, masked)
    torch.testing.assert_close(fused_grad, masked_grad)
    # and a mask still drops what it masks
    keep[:, 3:] = False
    half, count = summed_loss(predictions, targets, keep, spec)
    assert float(count) == 12 and float(half.detach()) < float(fused.detach())


def _trajectory(name: str, fused: bool) -> list[torch.Tensor]:
    """Five steps of optimizer ``name`` on a small least-squares problem."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    settings = OmegaConf.merge(
        OmegaConf.structured(config.ExperimentConfig).optim,
        {"name": name, "lr": 0.01, "weight_decay": 0.01, "momentum": 0.9},
    )
    if fused:
        optimizer = make_optimizer(model.parameters(), settings)
        # this torch build has fused Adam and AdamW for the CPU
        assert bool(optimizer.defaults.get("fused")) is (name in ("adam", "adamw"))
    else:
        kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
        extra = {"momentum": 0.9} if name == "sgd" else {}
        optimizer = kind[name](model.parameters(), lr=0.01, weight_decay=0.01, **extra)
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    for _ in range(5):
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_fused_optimizer_takes_the_steps_of_the_plain_one(name: str) -> None:
    for fused, plain in zip(_trajectory(name, True), _trajectory(name, False), strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)


def test_without_a_fused_kernel_the_plain_optimizer_is_used(monkeypatch) -> None:
    class NoFused(torch.optim.Adam):
        def __init__(self, params, fused=None, **kwargs):  # type: ignore[no-untyped-def]
            if fused:
                raise RuntimeError("`fused=True` requires ... supported devices")
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", NoFused)
    settings = OmegaConf.structured(config.ExperimentConfig).optim
    optimizer = make_optimizer(nn.Linear(2, 2).parameters(), settings)
    assert isinstance(optimizer, NoFused) and not optimizer.defaults.get("fused")


@pytest.mark.parametrize("cell_type", [LSTMCell, GRUCell])
def test_the_fused_kernel_follows_the_cells_parameters(cell_type: type[nn.Module]) -> None:
    """The kernel's template holds the cell's Parameter objects; new Parameter
    objects (``load_state_dict(assign=True)``) and tensors substituted by
    ``functional_call`` are what it computes with."""
    from rnnzoo_plugins.activations import Tanh

    torch.manual_seed(0)
    cell = cell_type(3, 5, Tanh())
    x = torch.randn(2, 4, 3)
    state = tuple(torch.zeros(2, 5) for _ in range(2 if cell_type is LSTMCell else 1))
    before, _ = cell.forward_sequence(x, state, None)

    other = cell_type(3, 5, Tanh())
    cell.load_state_dict(other.state_dict(), assign=True)
    after, _ = cell.forward_sequence(x, state, None)
    expected, _ = other.forward_sequence(x, state, None)
    torch.testing.assert_close(after, expected)
    assert not torch.allclose(after, before)

    doubled = {k: 2 * v.detach() for k, v in other.state_dict().items()}
    substituted = torch.func.functional_call(
        _Sequence(cell), {f"cell.{k}": v for k, v in doubled.items()}, (x, state)
    )
    reference = _Sequence(cell_type(3, 5, Tanh()))
    reference.cell.load_state_dict(doubled)
    torch.testing.assert_close(substituted, reference(x, state))
    # and the cell's own parameters are back in use afterwards
    torch.testing.assert_close(cell.forward_sequence(x, state, None)[0], expected)


class _Sequence(nn.Module):
    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> torch.Tensor:
        out, _ = self.cell.forward_sequence(x, state, None)
        return out


def test_the_settings_snapshot_holds_the_resolved_values(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RNNZOO_TEST_STEPS", "123")
    cfg = config.load(None, ["trainer.steps=${oc.env:RNNZOO_TEST_STEPS}", "optim.lr=0.5"])
    snap = snapshot(cfg)
    assert snap.trainer.steps == 123 and snap.optim.lr == 0.5
    assert snap.model.cell == cfg.model.cell
    assert snap.trainer.eval_batches == cfg.trainer.eval_batches


@pytest.mark.parametrize("saved_fused", [False, True], ids=["unfused-checkpoint", "fused"])
def test_a_resumed_optimizer_keeps_this_process_implementation(saved_fused: bool) -> None:
    torch.manual_seed(0)
    before, after = nn.Linear(4, 3), nn.Linear(4, 3)
    after.load_state_dict(before.state_dict())
    settings = OmegaConf.merge(
        OmegaConf.structured(config.ExperimentConfig).optim,
        {"name": "adam", "lr": 0.01, "weight_decay": 0.01, "beta1": 0.9, "beta2": 0.99},
    )
    saving = torch.optim.Adam(
        before.parameters(), lr=0.01, weight_decay=0.01, betas=(0.9, 0.99), fused=saved_fused
    )
    resumed = make_optimizer(after.parameters(), settings)
    x, y = torch.randn(16, 4), torch.randn(16, 3)

    def step(model: nn.Linear, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()

    for _ in range(3):
        step(before, saving)
    after.load_state_dict(before.state_dict())
    saved = copy.deepcopy(saving.state_dict())  # as a checkpoint file would hold it
    resumed.load_state_dict(same_implementation(saved, resumed))
    assert resumed.param_groups[0]["fused"] is True
    step(before, saving)
    step(after, resumed)  # the fourth step goes on from the third, fused
    for a, b in zip(before.parameters(), after.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
