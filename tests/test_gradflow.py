"""The gradient-flow observatory against independent computations.

The logged ``||dL/dh_t||`` and ``||dL_T/dh_t||`` are compared with autograd on an
Elman RNN unrolled here in plain torch from the trained model's weights; the
activation statistics and singular values with direct formulas; the W&B offline
run is read back from its ``.wandb`` file.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from jsonl import read_jsonl
from torch import Tensor
from wandb_records import read_run, run_files

from rnnzoo import Activation, Batch, TaskSpec, build_model, config, hookimpl
from rnnzoo.cli import main
from rnnzoo.events import TrainingRun
from rnnzoo.gradflow import (
    GradflowResult,
    as_record,
    decay,
    parameter_grad_norms,
    probe,
    reach,
)
from rnnzoo.gradflow_demo import run_demo
from rnnzoo.gradflow_figures import GradflowFigures
from rnnzoo.model import RNNModel
from rnnzoo.plugins import plugin_manager
from rnnzoo.registry import Registry
from rnnzoo.training import Trainer

HIDDEN = 6
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def train(run_dir: Path, overrides: list[str], registry: Registry | None = None) -> Trainer:
    base = [
        "model.cell=elman",
        "model.activation=tanh",
        f"model.hidden_size={HIDDEN}",
        "trainer.batch_size=8",
        "trainer.progress=false",
        "trainer.log_every=1",
        "trainer.device=cpu",
        "gradflow.every=1",
        "gradflow.batch_size=5",
        "tracking.wandb_mode=disabled",
    ]
    trainer = Trainer(
        config.load(None, base + overrides), registry or Registry(plugin_manager()), run_dir
    )
    trainer.fit()
    return trainer


def rows_at(run_dir: Path, step: int, key: str) -> dict[str, Any]:
    """The metrics.jsonl row of ``step`` that holds ``key``."""
    return next(r for r in read_jsonl(run_dir / "metrics.jsonl") if r["step"] == step and key in r)


# -- an Elman RNN unrolled by hand ------------------------------------------------


def unrolled_elman(
    weights: dict[str, Tensor], x: Tensor, cell: int, reverse: bool = False
) -> tuple[list[Tensor], list[Tensor]]:
    """``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``: pre-activations and
    states, in processing order (time reversed when ``reverse``)."""
    w_ih, w_hh, b_ih, b_hh = (
        weights[f"recurrence.cells.{cell}.{n}"]
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )
    h = torch.zeros(x.shape[0], w_hh.shape[0], dtype=torch.float64)
    zs, hs = [], []
    for t in reversed(range(x.shape[1])) if reverse else range(x.shape[1]):
        z = x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        h = torch.tanh(z)
        zs.append(z)
        hs.append(h)
    return zs, hs


def reference(model: RNNModel, batch: Batch, loss_step: int) -> dict[str, Any]:
    """``||dL/dh_t||`` and ``||dL_T/dh_t||`` by autograd through the unrolled RNN,
    in float64, with the model's weights copied; mean of 1 - tanh^2 over every
    pre-activation; the largest singular value of W_hh."""
    weights = {k: v.detach().double().requires_grad_() for k, v in model.state_dict().items()}
    spec = model.head.spec
    if spec.input_kind == "tokens":
        x = F.embedding(batch.inputs, weights["adapter.embedding.weight"])
    else:
        x = batch.inputs.double()
    directions = model.recurrence.directions
    zs, states = unrolled_elman(weights, x, 0)
    features = torch.stack(states, 1)
    curves_of = {"layer0/dir0": states}
    if directions == 2:
        zs_b, states_b = unrolled_elman(weights, x, 1, reverse=True)
        zs += zs_b
        curves_of["layer0/dir1"] = states_b[::-1]  # time order
        features = torch.cat([features, torch.stack(states_b[::-1], 1)], -1)
    w_out, b_out = weights["head.project.weight"], weights["head.project.bias"]
    if spec.per_token:
        logits = features @ w_out.T + b_out
        loss = F.cross_entropy(logits.reshape(-1, spec.output_size), batch.targets.reshape(-1))
        last_loss = F.cross_entropy(logits[:, loss_step], batch.targets[:, loss_step])
    else:
        prediction = (features[:, -1] @ w_out.T + b_out).squeeze(-1)
        loss = last_loss = (prediction - batch.targets.double()).pow(2).mean()
    out: dict[str, Any] = {"grad_h": {}, "grad_h_last_loss": {}}
    for key, hs in curves_of.items():
        grads = torch.autograd.grad(loss, hs, retain_graph=True)
        out["grad_h"][key] = [float(g.norm()) for g in grads]
    grads = torch.autograd.grad(last_loss, states[: loss_step + 1], retain_graph=True)
    out["grad_h_last_loss"]["layer0/dir0"] = [float(g.norm()) for g in grads]
    z = torch.cat([z.reshape(-1) for z in zs])
    out["act_deriv_mean"] = float((1 - torch.tanh(z) ** 2).mean().detach())
    out["sigma_max"] = float(
        torch.linalg.matrix_norm(weights["recurrence.cells.0.weight_hh"].detach(), 2)
    )
    return out


def assert_curves_close(logged: list[float], expected: list[float]) -> None:
    assert len(logged) == len(expected)
    assert logged == pytest.approx(expected, rel=1e-4, abs=1e-12)


def reach_bounds(curve: list[float], factor: float, rel: float = 1e-3) -> tuple[float, float]:
    """The reaches of ``curve`` for every threshold within ``rel`` of ``factor``.
    One value, unless a point of the curve lies that close to the threshold: then
    float rounding in the probe decides on which side it falls, and either reach
    is right."""
    return reach(curve, factor * (1 - rel)), reach(curve, factor * (1 + rel))


def check_probe_against_reference(trainer: Trainer, step: int, loss_step: int) -> None:
    """The probe logged at ``step`` (the last one: the model still has its weights)
    against the hand-unrolled RNN on the same probe batch."""
    record = read_jsonl(trainer.run_dir / "gradflow.jsonl")[-1]
    assert record["step"] == step
    batch = next(iter(trainer.task.val_batches(trainer.cfg.gradflow.batch_size)))
    expected = reference(trainer.model, batch, record["loss_step"])
    assert record["loss_step"] == loss_step
    assert set(record["grad_h"]) == set(expected["grad_h"])
    for key, curve in expected["grad_h"].items():
        assert_curves_close(record["grad_h"][key], curve)
    last = expected["grad_h_last_loss"]["layer0/dir0"]
    assert_curves_close(record["grad_h_last_loss"]["layer0/dir0"], last)
    logged = rows_at(trainer.run_dir, step, "gradflow/reach10")
    for factor in (10, 1000):
        key = f"gradflow/reach{factor}"
        assert logged[key] == reach(record["grad_h_last_loss"]["layer0/dir0"], factor)
        low, high = reach_bounds(last, factor)
        assert low <= logged[key] <= high
    assert logged["gradflow/decay"] == pytest.approx(decay(last), rel=1e-3)
    assert logged["gradflow/act_deriv_mean"] == pytest.approx(expected["act_deriv_mean"], rel=1e-5)
    assert logged["gradflow/sigma_max"] == pytest.approx(expected["sigma_max"], rel=1e-5)


# -- one W&B-tracked training run on the adding problem (a sequence task) ------------

STEPS, LENGTH, MAX_NORM = 3, 12, 1e-3


@pytest.fixture(scope="module")
def adding_run(tmp_path_factory: pytest.TempPathFactory) -> Trainer:
    with pytest.MonkeyPatch.context() as env:
        env.delenv("WANDB_MODE", raising=False)
        return train(
            tmp_path_factory.mktemp("adding"),
            [
                "task.name=adding",
                f"task.length={LENGTH}",
                "task.val_size=20",
                f"trainer.steps={STEPS}",
                f"controllers.clip_norm.max_norm={MAX_NORM}",  # clips every step
                "tracking.wandb_mode=offline",
            ],
        )


def test_logged_gradients_match_unrolled_elman_on_a_sequence_task(adding_run: Trainer) -> None:
    check_probe_against_reference(adding_run, STEPS, LENGTH - 1)


@pytest.mark.parametrize(
    ("head", "loss_step", "expected_step"),
    [("per_token", -1, 23), ("per_token", 15, 15), ("bidirectional", -1, 23)],
)
def test_logged_gradients_match_unrolled_elman_on_a_per_token_task(
    tmp_path: Path, head: str, loss_step: int, expected_step: int
) -> None:
    # copy memory with length 4: 10 symbols, 4 blanks, 10 answers = 24 steps
    trainer = train(
        tmp_path,
        [
            "task.name=copy_memory",
            "task.length=4",
            "task.val_size=10",
            "model.input_dim=5",
            f"model.head={head}",
            "trainer.steps=1",
            f"gradflow.loss_step={loss_step}",
        ],
    )
    check_probe_against_reference(trainer, 1, expected_step)


def test_gradflow_jsonl_holds_every_probe_and_figures_are_written(adding_run: Trainer) -> None:
    run_dir = adding_run.run_dir
    records = read_jsonl(run_dir / "gradflow.jsonl")
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for r in records:
        assert len(r["grad_h"]["layer0/dir0"]) == LENGTH
        assert len(r["grad_h_last_loss"]["layer0/dir0"]) == LENGTH
        logged = rows_at(run_dir, r["step"], "gradflow/reach10")
        scalars = {k: v for k, v in r.items() if k.startswith("gradflow/")}
        assert scalars and scalars == {k: logged[k] for k in scalars}
    for name in ("grad_h.png", "heatmap.png"):
        data = (run_dir / "gradflow" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) < 200_000


def test_gradient_norms_before_and_after_the_controllers(adding_run: Trainer) -> None:
    names = [n for n, _ in adding_run.model.named_parameters()]
    for step in range(1, STEPS + 1):
        row = rows_at(adding_run.run_dir, step, "grad/preclip/nonfinite")
        pre = [row[f"grad/preclip/{n}"] for n in names]
        post = [row[f"grad/postclip/{n}"] for n in names]
        assert row["grad/preclip/nonfinite"] == row["grad/postclip/nonfinite"] == 0
        pre_norm = math.sqrt(sum(v * v for v in pre))
        train_row = rows_at(adding_run.run_dir, step, "grad/norm_preclip")
        assert pre_norm == pytest.approx(train_row["grad/norm_preclip"], rel=1e-5)
        # clip_norm rescales every gradient by one factor, to a global norm of MAX_NORM
        assert math.sqrt(sum(v * v for v in post)) == pytest.approx(MAX_NORM, rel=1e-3)
        scale = MAX_NORM / pre_norm
        assert post == pytest.approx([v * scale for v in pre], rel=1e-3)


def test_probes_do_not_change_training(tmp_path: Path, adding_run: Trainer) -> None:
    overrides = [
        "task.name=adding",
        f"task.length={LENGTH}",
        "task.val_size=20",
        f"trainer.steps={STEPS}",
        f"controllers.clip_norm.max_norm={MAX_NORM}",
        "gradflow.every=0",
    ]
    without = train(tmp_path, overrides).model.state_dict()
    probed = adding_run.model.state_dict()
    assert all(torch.equal(without[k], probed[k]) for k in probed)


class PoisonFirstGradient:
    """Puts NaN into two gradient entries and Inf into one at training step 0."""

    @hookimpl
    def rnnzoo_after_backward(self, run: TrainingRun, step: int) -> None:
        if step == 0:
            grad = next(run.model.parameters()).grad
            assert grad is not None
            grad.view(-1)[:3] = torch.tensor([math.nan, math.nan, math.inf])


def test_non_finite_gradients_are_counted(tmp_path: Path) -> None:
    pm = plugin_manager()
    pm.register(PoisonFirstGradient(), "poison")
    train(tmp_path, ["task.name=adding", "task.length=6", "trainer.steps=2"], Registry(pm))
    first = rows_at(tmp_path, 1, "grad/preclip/nonfinite")
    assert first["grad/preclip/nonfinite"] == 3
    assert rows_at(tmp_path, 1, "train/nonfinite_steps")["train/nonfinite_steps"] == 1
    assert rows_at(tmp_path, 2, "grad/preclip/nonfinite")["grad/preclip/nonfinite"] == 0


def test_parameter_grad_norms_skip_parameters_without_gradient() -> None:
    layer = torch.nn.Linear(3, 2)
    assert parameter_grad_norms(layer, "grad/x") == {}
    layer.weight.grad = torch.full((2, 3), 2.0)
    assert parameter_grad_norms(layer, "grad/x") == {
        "grad/x/weight": pytest.approx(math.sqrt(6 * 4)),
        "grad/x/nonfinite": 0,
    }


# -- W&B offline run, read back from its transaction log ---------------------------


def test_wandb_offline_run_holds_the_gradflow_keys(adding_run: Trainer) -> None:
    (log,) = run_files(adding_run.run_dir)
    history = read_run(log).history
    probes = [h for h in history if "gradflow/reach10" in h]
    assert [h["trainer/step"] for h in probes] == list(range(1, STEPS + 1))
    names = [n for n, _ in adding_run.model.named_parameters()]
    expected = {
        "gradflow/reach10",
        "gradflow/reach1000",
        "gradflow/decay",
        "gradflow/act_deriv_mean",
        "gradflow/act_deriv_bound",
        "gradflow/act_can_amplify",
        "gradflow/sigma_max",
        "gradflow/grad_h_first",
        "gradflow/grad_h_last",
        "grad/preclip/nonfinite",
        *(f"grad/preclip/{n}" for n in names),
        *(f"grad/postclip/{n}" for n in names),
    }
    for h in probes:
        assert expected <= set(h)
        logged = rows_at(adding_run.run_dir, h["trainer/step"], "gradflow/reach10")
        assert {k: h[k] for k in expected} == pytest.approx({k: logged[k] for k in expected})
    images = [h for h in history if "gradflow/heatmap/_type" in h]
    assert images and all(h["gradflow/grad_h_plot/_type"] == "image-file" for h in images)
    media = list(log.parent.glob("files/media/images/gradflow/*.png"))
    assert len(media) == 2 * len(images)


# -- activation statistics, singular values, figures --------------------------------


def test_relu_zero_fraction_and_mean_derivative() -> None:
    torch.manual_seed(0)
    spec = TaskSpec("real", 3, "real", 1, per_token=False)
    model = build_model(spec, cell="elman", activation="relu", hidden_size=HIDDEN, head="sequence")
    batch = Batch(inputs=torch.randn(4, 9, 3), targets=torch.randn(4))
    result = probe(model, batch)
    w = {k: v.detach().double() for k, v in model.state_dict().items()}
    h = torch.zeros(4, HIDDEN, dtype=torch.float64)
    zs = []
    for t in range(9):
        z = (
            batch.inputs[:, t].double() @ w["recurrence.cells.0.weight_ih"].T
            + w["recurrence.cells.0.bias_ih"]
        )
        z = z + h @ w["recurrence.cells.0.weight_hh"].T + w["recurrence.cells.0.bias_hh"]
        h = torch.relu(z)
        zs.append(z)
    z = torch.stack(zs)
    # no pre-activation within float32 rounding of 0: its sign, and so whether the
    # unit is dead, is the same in the model's float32 arithmetic on every CPU
    assert float(z.abs().min()) > 1e-4
    dead = float((z <= 0).double().mean())
    assert 0 < dead < 1
    assert result.scalars["gradflow/act_zero_frac"] == pytest.approx(dead)
    assert result.scalars["gradflow/act_deriv_mean"] == pytest.approx(1 - dead)


def test_lstm_probe_follows_the_whole_state() -> None:
    """For an LSTM the probed norm is over (h_t, c_t): checked against autograd on an
    LSTM unrolled here in float64 from the model's weights."""
    torch.manual_seed(0)
    spec = TaskSpec("real", 3, "real", 1, per_token=False)
    model = build_model(spec, cell="lstm", hidden_size=HIDDEN, head="sequence")
    batch = Batch(inputs=torch.randn(4, 12, 3), targets=torch.randn(4))
    result = probe(model, batch)
    w = {k: v.detach().double().requires_grad_() for k, v in model.state_dict().items()}
    cell = "recurrence.cells.0."
    h = c = torch.zeros(4, HIDDEN, dtype=torch.float64)
    hs, cs = [], []
    for t in range(12):
        gates = batch.inputs[:, t].double() @ w[cell + "weight_ih"].T + w[cell + "bias_ih"]
        gates = gates + h @ w[cell + "weight_hh"].T + w[cell + "bias_hh"]
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
        cs.append(c)
    prediction = (h @ w["head.project.weight"].T + w["head.project.bias"]).squeeze(-1)
    loss = (prediction - batch.targets.double()).pow(2).mean()
    grads = torch.autograd.grad(loss, hs + cs)
    by_h = [float(g.norm()) for g in grads[:12]]
    whole = [
        float(torch.cat([gh, gc], -1).norm()) for gh, gc in zip(grads[:12], grads[12:], strict=True)
    ]
    assert_curves_close(result.last_loss["layer0/dir0"], whole)
    assert_curves_close(result.per_step["layer0/dir0"], whole)
    assert whole[0] > 1.5 * by_h[0]  # the cell path carries most of what reaches t = 0


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_sigma_max_is_the_spectral_norm(cell: str) -> None:
    spec = TaskSpec("real", 2, "real", 1, per_token=False)
    model = build_model(spec, cell=cell, hidden_size=HIDDEN, num_layers=2, head="sequence")
    batch = Batch(inputs=torch.randn(3, 5, 2), targets=torch.randn(3))
    scalars = probe(model, batch).scalars
    norms = []
    for layer in range(2):
        w = model.recurrence.cell(layer).recurrent_weights()["weight_hh"]
        norms.append(float(torch.linalg.matrix_norm(w.detach(), 2)))
        key = f"gradflow/sigma_max/layer{layer}/dir0/weight_hh"
        assert scalars[key] == pytest.approx(norms[-1], rel=1e-6)
    assert scalars["gradflow/sigma_max"] == pytest.approx(max(norms), rel=1e-6)
    assert "gradflow/reach10/layer1/dir0" in scalars
    assert "gradflow/act_zero_frac" not in scalars  # tanh never has a zero derivative


class Doubled(Activation):
    """2 tanh(z): g'(z) lies in (0, 2], so a step can amplify the gradient."""

    derivative_range = (0.0, 2.0)

    def function(self, z: Tensor) -> Tensor:
        return 2 * torch.tanh(z)


class Undeclared(Activation):
    """tanh without a declared derivative range."""

    def function(self, z: Tensor) -> Tensor:
        return torch.tanh(z)


class ActivationPlugin:
    @hookimpl
    def rnnzoo_activations(self) -> dict[str, Any]:
        return {"doubled": Doubled, "undeclared": Undeclared}


def probe_with(cell: str, activation: str, **kwargs: Any) -> dict[str, float]:
    pm = plugin_manager()
    pm.register(ActivationPlugin(), "test-activations")
    torch.manual_seed(0)
    spec = TaskSpec("real", 3, "real", 1, per_token=False)
    model = build_model(
        spec,
        cell=cell,
        activation=activation,
        hidden_size=HIDDEN,
        head="sequence",
        registry=Registry(pm),
        **kwargs,
    )
    return probe(model, Batch(inputs=torch.randn(4, 7, 3), targets=torch.randn(4))).scalars


@pytest.mark.parametrize(
    ("cell", "activation", "args", "bound"),
    [
        ("elman", "tanh", {}, 1.0),
        ("elman", "relu", {}, 1.0),
        ("elman", "identity", {}, 1.0),
        ("elman", "sigmoid", {}, 0.25),
        ("elman", "leaky_relu", {"negative_slope": 3.0}, 3.0),
        ("elman", "doubled", {}, 2.0),
        ("lstm", "tanh", {}, 1.0),
        ("lstm", "doubled", {}, 2.0),
        ("irnn", "tanh", {}, 1.0),  # irnn always uses relu
    ],
)
def test_probe_logs_the_declared_bound_on_the_activation_derivative(
    cell: str, activation: str, args: dict[str, Any], bound: float
) -> None:
    scalars = probe_with(cell, activation, activation_args=args)
    assert scalars["gradflow/act_deriv_bound"] == bound
    assert scalars["gradflow/act_can_amplify"] == float(bound > 1)


def test_probe_bound_is_the_largest_over_the_activations_in_use() -> None:
    pm = plugin_manager()
    torch.manual_seed(0)
    spec = TaskSpec("real", 3, "real", 1, per_token=False)
    model = build_model(
        spec, cell="elman", hidden_size=HIDDEN, num_layers=2, head="sequence", registry=Registry(pm)
    )
    batch = Batch(inputs=torch.randn(4, 7, 3), targets=torch.randn(4))
    assert probe(model, batch).scalars["gradflow/act_deriv_bound"] == 1.0
    model.recurrence.cell(1).activation = Doubled()  # type: ignore[assignment]
    scalars = probe(model, batch).scalars
    assert scalars["gradflow/act_deriv_bound"] == 2.0
    assert scalars["gradflow/act_can_amplify"] == 1.0


def test_an_undeclared_derivative_range_logs_no_bound() -> None:
    scalars = probe_with("elman", "undeclared")
    assert "gradflow/act_deriv_mean" in scalars
    assert "gradflow/act_deriv_bound" not in scalars
    assert "gradflow/act_can_amplify" not in scalars


def test_figures_are_redrawn_within_their_time_budget(tmp_path: Path) -> None:
    spec = TaskSpec("real", 2, "real", 1, per_token=False)
    model = build_model(spec, cell="elman", hidden_size=4, head="sequence")
    result = probe(model, Batch(inputs=torch.randn(2, 7, 2), targets=torch.randn(2)))
    keys = {"gradflow/grad_h_plot", "gradflow/heatmap"}
    unlimited = GradflowFigures(tmp_path / "every", share=1e9, first_cost=0.0, aside=False)
    assert set(unlimited.add(10, result)) == keys
    assert set(unlimited.add(20, result)) == keys
    assert unlimited.finish() == {}  # the latest probe is drawn already
    no_budget = GradflowFigures(tmp_path / "end", share=0.0, aside=False)
    assert no_budget.add(10, result) == no_budget.add(20, result) == {}
    drawn = no_budget.finish()  # the end of training draws the latest probe
    assert set(drawn) == keys and all(p.read_bytes().startswith(PNG_MAGIC) for p in drawn.values())
    assert no_budget.state_dict() == {
        "rows": [result.per_step["layer0/dir0"]] * 2,
        "steps": [10, 20],
    }


def test_a_probe_record_is_valid_json_with_non_finite_values() -> None:
    result = GradflowResult(
        scalars={"gradflow/decay": math.nan, "gradflow/reach10": 2.0},
        per_step={"layer0/dir0": [1.0, math.inf]},
        last_loss={"layer0/dir0": [-math.inf, 0.5]},
        loss_step=1,
    )
    line = json.dumps(as_record(3, result), allow_nan=False)
    assert json.loads(line) == {
        "step": 3,
        "loss_step": 1,
        "gradflow/decay": "nan",
        "gradflow/reach10": 2.0,
        "grad_h": {"layer0/dir0": [1.0, "inf"]},
        "grad_h_last_loss": {"layer0/dir0": ["-inf", 0.5]},
    }


def test_reach_and_decay_of_a_geometric_curve() -> None:
    curve = [0.5**d for d in range(20)][::-1]  # halves with every step back
    assert reach(curve, 10) == 4  # 0.5^4 = 0.0625 <= 0.1 < 0.5^3
    assert reach(curve, 1000) == 10
    assert reach([1.0] * 5, 10) == 5  # never falls: reaches everything measured
    assert decay(curve) == pytest.approx(math.log(0.5))


# -- the lecture's demonstration ---------------------------------------------------


def test_tanh_elman_reaches_much_less_far_than_lstm_at_initialisation(tmp_path: Path) -> None:
    rows = run_demo(
        Registry(plugin_manager()),
        ["elman:tanh", "lstm"],
        length=100,
        hidden_size=64,
        seeds=3,
        out_dir=tmp_path,
    )
    elman_rows, lstm_rows = rows["elman:tanh"], rows["lstm"]
    for elman, lstm in zip(elman_rows["per_seed"], lstm_rows["per_seed"], strict=True):
        # LSTM: the additive cell path keeps the gradient
        assert lstm["reach10"] > elman["reach10"]
        assert lstm["reach1000"] >= 2 * elman["reach1000"]
        assert abs(elman["decay"]) >= 2 * abs(lstm["decay"])
        assert elman["reach1000"] < 30 and elman["decay"] < -0.3
    assert lstm_rows["reach10"] >= 1.4 * elman_rows["reach10"]


PLUGIN_FILE = '''
import torch
from torch import nn
from rnnzoo import Cell, hookimpl


class LeakyCell(Cell):
    """h' = (1 - a) h + a tanh(W x + U h)."""

    def __init__(self, input_size, hidden_size, leak: float = 0.5):
        super().__init__(input_size, hidden_size)
        self.leak = leak
        self.x = nn.Linear(input_size, hidden_size)
        self.h = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x_t, state):
        (h,) = state
        h = (1 - self.leak) * h + self.leak * torch.tanh(self.x(x_t) + self.h(h))
        return h, (h,)


@hookimpl
def rnnzoo_cells():
    return {"leaky": LeakyCell}
'''


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> dict[str, list[float]]:
    """The printed table: configuration -> [reach10, reach1000, decay]."""
    number = r"\s+(-?\d+\.\d+)"
    rows = re.findall(rf"^(\S+){number}{number}{number}$", out, re.MULTILINE)
    return {name: [float(v) for v in values] for name, *values in rows}


def check_outputs(out_dir: Path, printed: dict[str, list[float]], length: int) -> dict[str, Any]:
    data = json.loads((out_dir / "gradflow.json").read_text())
    assert set(data["configs"]) == set(printed)
    for name, row in data["configs"].items():
        assert printed[name] == pytest.approx(
            [row["reach10"], row["reach1000"], row["decay"]], abs=0.051
        )
        seeds = row["per_seed"]
        assert row["reach1000"] == pytest.approx(
            sum(reach(s["curve"], 1000) for s in seeds) / len(seeds)
        )
        assert all(len(s["curve"]) == length for s in seeds) and len(row["curve"]) == length
    png = (out_dir / "gradflow.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) < 200_000
    return data


def test_gradflow_command_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        ["gradflow", "-T", "30", "--hidden-size", "8", "--seeds", "2", "--out", str(tmp_path)],
        capsys,
    )
    assert code == 0, err
    printed = table(out)
    assert list(printed) == ["elman:tanh", "elman:relu", "irnn", "lstm", "gru"]
    check_outputs(tmp_path, printed, 30)
    assert printed["irnn"][1] == 30  # the identity carries the gradient all the way back
    assert printed["elman:tanh"][1] < 30 and printed["elman:relu"][1] < 30


def test_gradflow_command_takes_plugin_cells_and_trains_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = tmp_path / "leaky_plugin.py"
    plugin.write_text(PLUGIN_FILE)
    out_dir = tmp_path / "out"
    args = [
        "-p",
        str(plugin),
        "gradflow",
        "--configs",
        "example_leaky,leaky,elman:relu",
        "-T",
        "12",
    ]
    args += ["--hidden-size", "8", "--seeds", "1", "--train-steps", "3", "--out", str(out_dir)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "after 3 training steps" in out
    data = check_outputs(out_dir, table(out), 12)
    assert data["settings"]["train_steps"] == 3


@pytest.mark.parametrize(
    ("configs", "message"),
    [("irnn:relu", "Cell 'irnn' takes no activation"), ("lstn", "Did you mean 'lstm'")],
)
def test_gradflow_command_rejects_bad_configurations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], configs: str, message: str
) -> None:
    code, _, err = run_cli(["gradflow", "--configs", configs, "--out", str(tmp_path)], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "gradflow.json").exists()


class HeatmapSteps:
    """Records the probe steps the gradient-flow heatmap holds when training ends
    (registered after the built-in plugin, so pluggy calls it first)."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    @hookimpl
    def rnnzoo_train_end(self, run: TrainingRun) -> None:
        from rnnzoo_plugins import gradflow_probes

        self.steps = list(gradflow_probes._active[run].figures.steps)


def test_a_resumed_run_keeps_its_heatmap_history(tmp_path: Path) -> None:
    overrides = [
        "task.length=6",
        "task.val_size=8",
        "model.hidden_size=4",
        "trainer.batch_size=4",
        "trainer.checkpoint_every=4",
        "trainer.progress=false",
        "gradflow.every=2",
        "gradflow.batch_size=4",
        "tracking.wandb_mode=disabled",
    ]
    pm = plugin_manager()
    seen = HeatmapSteps()
    pm.register(seen, "heatmap-steps")
    registry = Registry(pm)
    run = tmp_path / "run"
    Trainer(config.load(None, [*overrides, "trainer.steps=6"]), registry, run).fit()
    assert seen.steps == [2, 4, 6]
    # resume from the checkpoint at step 4: the probe of step 6 runs again, once
    (run / "checkpoints" / "ckpt-00000006.pt").unlink()
    more = config.load(run / "config.yaml", ["trainer.steps=10"])
    Trainer(more, registry, run, resume=True).fit()
    assert seen.steps == [2, 4, 6, 8, 10]
    assert [r["step"] for r in read_jsonl(run / "gradflow.jsonl")] == [2, 4, 6, 8, 10]
