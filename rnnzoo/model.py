"""A model is an input adapter, a recurrence over a cell, and a head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from rnnzoo.adapters import input_adapter
from rnnzoo.cell import Cell, State
from rnnzoo.compiled_loop import CompiledLoop
from rnnzoo.errors import ConfigError
from rnnzoo.head import Head
from rnnzoo.recurrence import Recurrence
from rnnzoo.registry import Registry
from rnnzoo.task import Batch, TaskSpec


@dataclass
class ModelOutput:
    predictions: Tensor
    final_state: list[State]
    #: per layer and direction, the per-step states (see RecurrenceOutput)
    step_states: list[list[State]] | None = None


class RNNModel(nn.Module):
    """Input adapter -> recurrence -> head."""

    def __init__(self, adapter: nn.Module, recurrence: Recurrence, head: Head) -> None:
        super().__init__()
        self.adapter = adapter
        self.recurrence = recurrence
        self.head = head

    def forward(
        self, batch: Batch | Tensor, state: list[State] | None = None, return_states: bool = False
    ) -> ModelOutput:
        """Run a :class:`Batch`, or a plain tensor: features ``[B, T, F]`` or token
        ids ``[B, T]``, every sequence full length. A task whose input adapter needs
        more than the inputs (character features of words) needs a ``Batch``."""
        if isinstance(batch, Tensor):
            batch = Batch(inputs=batch, targets=batch.new_zeros(0))
        x = self.adapter(batch)
        if state is not None and batch.reset is not None:
            fresh = self.recurrence.initial_state(batch.batch_size, x.device, x.dtype)
            reset = batch.reset.to(x.device)[:, None]
            state = [
                tuple(torch.where(reset, f, s) for f, s in zip(fs, ss, strict=True))
                for fs, ss in zip(fresh, state, strict=True)
            ]
        rec = self.recurrence(x, batch.lengths, state, return_states)
        return ModelOutput(self.head(rec.outputs, batch), rec.final_state, rec.step_states)

    def loss(self, predictions: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """Summed loss and the number of items it sums over."""
        return self.head.loss(predictions, batch)

    def cells(self) -> list[Cell]:
        return [c for c in self.recurrence.cells if isinstance(c, Cell)]


def _registry(registry: Registry | None) -> Registry:
    if registry is not None:
        return registry
    from rnnzoo.plugins import plugin_manager

    return Registry(plugin_manager())


def build_model(
    spec: TaskSpec,
    *,
    cell: str = "lstm",
    cell_args: dict[str, Any] | None = None,
    activation: str = "tanh",
    activation_args: dict[str, Any] | None = None,
    hidden_size: int = 64,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    input_dim: int | None = None,
    head: str = "sequence",
    head_args: dict[str, Any] | None = None,
    fused: bool = True,
    compile: bool = False,
    compile_steps: int = 16,
    adapter: nn.Module | None = None,
    registry: Registry | None = None,
) -> RNNModel:
    """Build a model from plugin names, for notebooks and the trainer alike.

    ``rnnzoo.build_model(spec, cell="lstm", head="per_token", hidden_size=128)``, or
    from a config's model section: ``build_model(spec, **OmegaConf.to_container(
    cfg.model))`` (the keyword arguments are the fields of ``config.ModelConfig``).
    ``spec`` says what the task feeds in and expects back; ``adapter`` replaces the
    default input adapter (an embedding for tokens, features as they are or
    projected to ``input_dim`` for real values). ``compile`` runs the cells that
    take the step loop through blocks of ``compile_steps`` steps compiled by
    ``torch.compile`` (see :mod:`rnnzoo.compiled_loop`).
    """
    reg = _registry(registry)
    for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers)):
        if value < 1:
            raise ConfigError(f"'model.{name}' must be at least 1, got {value}.")
    if compile_steps < 1:
        raise ConfigError(
            f"'model.compile_steps' must be at least 1, got {compile_steps}: it is the "
            "number of time steps per compiled block (16 by default)."
        )
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"'model.dropout' must be in [0, 1), got {dropout}.")
    head_component = reg.get("head", head)
    head_cls = head_component.factory
    wants_per_token = getattr(head_cls, "per_token", True)
    if wants_per_token != spec.per_token:
        kind = "a label per token" if spec.per_token else "one label per sequence"
        raise ConfigError(
            f"Head '{head}' predicts {'per token' if wants_per_token else 'per sequence'}, "
            f"but the task gives {kind}. Choose a matching head (see: rnnzoo list heads)."
        )
    directions = 2 if bidirectional or getattr(head_cls, "directions", 1) == 2 else 1

    cell_component = reg.get("cell", cell)
    cell_params = cell_component.check_args(cell_args or {}, "model.cell_args")
    act_component = reg.get("activation", activation)
    act_params = act_component.check_args(activation_args or {}, "model.activation_args")

    def make_cell(input_size: int, hidden: int) -> Cell:
        supplied: dict[str, Any] = {}
        if cell_component.takes("activation"):
            supplied["activation"] = act_component.factory(**act_params)
        made = cell_component.factory(input_size, hidden, **supplied, **cell_params)
        if not isinstance(made, Cell):
            raise ConfigError(f"Cell '{cell}' built {type(made).__name__}, not an rnnzoo.Cell.")
        return made

    adapter = adapter if adapter is not None else input_adapter(spec, input_dim)
    recurrence = Recurrence(
        make_cell,
        adapter.output_size,  # type: ignore[arg-type]
        hidden_size,
        num_layers=num_layers,
        bidirectional=directions == 2,
        dropout=dropout,
        fused=fused,
        compiled=CompiledLoop(compile_steps) if compile else None,
    )
    head_module = head_component.build(
        head_args or {},
        "model.head_args",
        input_size=recurrence.output_size,
        spec=spec,
        directions=directions,
    )
    return RNNModel(adapter, recurrence, head_module)
