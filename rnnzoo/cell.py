"""The cell contract: one time step of a recurrent network."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class Cell(nn.Module):
    """One step of a recurrence: ``forward(x_t, state) -> (output_t, new_state)``.

    A cell is constructed from ``input_size`` and ``hidden_size`` followed by its own
    keyword parameters, each typed and with a default; those parameters are what
    ``rnnzoo describe`` shows and what the config validates. A cell that takes an
    ``activation: Activation`` parameter receives the activation plugin named by
    ``model.activation``.

    The state is a tuple of ``[batch, size]`` tensors named by :attr:`state_layout`;
    its first component is the hidden state ``h_t`` (what per-step controllers such
    as ``clip_state`` see); gradient-flow probes follow every component.

    Two optional speed-ups, both checked against the step loop by tests:

    * :meth:`project_input` hoists the part of the step that depends only on the
      input out of the time loop (one large matmul instead of T small ones).
      :meth:`forward` then receives the projected input.
    * :meth:`forward_sequence` runs a whole sequence at once (a fused kernel);
      it returns ``None`` where it does not apply.
    """

    state_layout: ClassVar[tuple[str, ...]] = ("h",)

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def initial_state(
        self, batch_size: int, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> State:
        """Zeros of ``[batch_size, hidden_size]`` for every state component."""
        return tuple(
            torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
            for _ in self.state_layout
        )

    def project_input(self, x: Tensor) -> Tensor:
        """Map the inputs of all steps ``[B, T, input_size]`` before the loop."""
        return x

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    def forward_sequence(
        self, x: Tensor, state: State, lengths: Tensor | None
    ) -> tuple[Tensor, State] | None:
        """Whole-sequence fast path over raw inputs ``[B, T, input_size]``.

        Returns ``(outputs [B, T, output_size], final_state)`` with zeros at padded
        positions and each sequence's final state taken at its last real step, or
        ``None`` where no fast path exists for this configuration.
        """
        return None

    def recurrent_weights(self) -> dict[str, Tensor]:
        """The matrices that multiply the previous state (their largest singular
        value says whether the recurrence can expand or must contract)."""
        return {}
