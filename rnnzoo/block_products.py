"""A compiled block's weight gradients as one product per block, not one per step.

A cell that multiplies a state by a weight at every step (``F.linear(h, W, b)``) gets,
under plain autograd, one weight-gradient product per step, ``dL/dz_t^T h_t`` for
the step's output ``z_t``: a product of ``B`` rows into the whole ``[out, in]``
gradient, summed over the steps. At small batches that sum costs more than the
step's forward product itself. Inside a compiled block of ``K`` steps,
:class:`Products` intercepts each ``F.linear`` of a step whose weight is one of the
cell's parameters (``torch.overrides.TorchFunctionMode``, which ``torch.compile``
traces) and replaces it with :class:`_DeferredLinear`, which computes the product
and, in backward, only the gradient of its input and bias. The gradient of its
output comes out of the block as the gradient of a zero *tap*, one ``[K, B, out]``
tensor per call site; :class:`_BlockWeightGradient` turns the block's taps and the
products' recorded inputs into the weight gradient with one product of ``K·B`` rows:

    dL/dW = Σ_t dL/dz_t^T h_t = (dL/dZ)^T H,   Z, H stacked over the block's steps.

The forward product uses a transposed copy of the weight made once per sequence
(``[in, out]``, contiguous), the backward the weight itself: each in the layout its
product reads fastest. Only the weight's gradient changes hands; the maths is the
cell's. Everything here is public torch API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from rnnzoo.cell import Cell, State


class _DeferredLinear(torch.autograd.Function):
    """``x @ weight_t + bias``; backward gives ``x`` and ``bias`` their gradients and
    hands the output's gradient to ``tap`` instead of computing the weight's."""

    @staticmethod
    def forward(
        x: Tensor, weight: Tensor, weight_t: Tensor, bias: Tensor | None, tap: Tensor
    ) -> Tensor:
        return x @ weight_t if bias is None else torch.addmm(bias, x, weight_t)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(inputs[1])
        ctx.bias_shape = None if inputs[3] is None else inputs[3].shape

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (weight,) = ctx.saved_tensors
        x_grad = grad @ weight if ctx.needs_input_grad[0] else None
        # a bias broadcast over the rows ([out], [1, out] or a scalar) sums back to its shape
        bias_grad = None if ctx.bias_shape is None else grad.sum_to_size(ctx.bias_shape)
        return x_grad, None, None, bias_grad, grad


class _BlockWeightGradient(torch.autograd.Function):
    """The taps of one call site for a block: zeros ``[K, B, out]`` made from
    ``weight`` (so that their gradient reaches this node). Backward: the weight's
    gradient for the whole block, ``taps_grad^T inputs`` with ``inputs`` the site's
    recorded ``[K, B, in]``, which the caller puts in ``recorded`` after the block."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, recorded: list[Tensor], shape: torch.Size) -> Tensor:
        ctx.recorded = recorded
        return weight.new_zeros(()).expand(shape)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (inputs,) = ctx.recorded
        grad = grad.reshape(-1, grad.shape[-1])
        # under autocast the recorded inputs may be bf16 while the taps, like the
        # weight, are fp32: the product takes the weight's dtype
        inputs = inputs.reshape(-1, inputs.shape[-1]).to(grad.dtype)
        return grad.t() @ inputs, None, None


class Products(TorchFunctionMode):
    """Active around one step of a cell over ``batch`` rows: the step's ``F.linear``
    calls on ``[batch, in]`` inputs (positional or keyword arguments) whose weight is
    one of ``weights`` become :class:`_DeferredLinear` with the next of ``taps``
    (one per call, in call order); :attr:`inputs` keeps each call's input and
    :attr:`sites` the index of its weight. Without taps it only records the sites;
    with them, a call whose weight is not the one ``expected`` at its place raises."""

    def __init__(
        self,
        weights: Sequence[Tensor],
        batch: int,
        transposed: Sequence[Tensor] = (),
        taps: Sequence[Tensor] = (),
        expected: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.weights = weights
        self.batch = batch
        self.transposed = transposed
        self.taps = taps
        self.expected = expected
        self.inputs: list[Tensor] = []
        self.sites: list[int] = []

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is not F.linear:
            return func(*args, **kwargs)
        named = dict(zip(("input", "weight", "bias"), args, strict=False)) | kwargs
        x, weight, bias = named["input"], named["weight"], named.get("bias")
        # [batch, in]: a product of the step's rows, which the taps' shape fits (a
        # product of other rows, such as a reshape into heads, stays as it is)
        if x.dim() == 2 and x.shape[0] == self.batch:
            for index, candidate in enumerate(self.weights):
                if weight is candidate:
                    self.sites.append(index)
                    if not self.taps:
                        break
                    call = len(self.inputs)
                    if call >= len(self.expected) or self.expected[call] != index:
                        raise RuntimeError(
                            "the cell's F.linear calls with its weights differ from step to step"
                        )
                    tap = self.taps[call]
                    self.inputs.append(x)
                    return _DeferredLinear.apply(
                        x, weight.detach(), self.transposed[index], bias, tap
                    )
        return func(*args, **kwargs)


def weights_of(cell: Cell) -> list[Tensor]:
    """The cell's matrices that train: what :class:`Products` looks for."""
    return [p for p in cell.parameters() if p.dim() == 2 and p.requires_grad]


def call_sites(cell: Cell, weights: list[Tensor], x: Tensor, state: State) -> tuple[int, ...]:
    """The index in ``weights`` (:func:`weights_of`) of the weight of each ``F.linear``
    call that one step of ``cell`` makes with one of them, in call order: the cell's first step
    of the raw inputs ``x [B, T, input_size]``, run without gradients and then undone
    as far as torch can see it (its buffers, such as a batch norm's running
    statistics, and the random state are put back), so that the sequence's own steps
    see what the eager loop's would."""
    recorder = Products(weights, x.shape[0])
    buffers = [b.clone() for b in cell.buffers()]
    devices = [] if x.device.type == "cpu" else [x.device]  # the CPU's is always forked
    with torch.random.fork_rng(devices, device_type=x.device.type), torch.no_grad():
        with recorder:
            cell(cell.project_input(x[:, :1])[:, 0], state)
        for buffer, saved in zip(cell.buffers(), buffers, strict=True):
            buffer.copy_(saved)
    return tuple(recorder.sites)


def transposed(weights: list[Tensor], sites: tuple[int, ...]) -> list[Tensor]:
    """Each of ``weights`` that a call site uses as a contiguous ``[in, out]`` copy
    (what the forward product reads), the others as they are."""
    return [
        w.detach().t().contiguous() if i in sites else w.detach() for i, w in enumerate(weights)
    ]


def block_taps(
    weights: list[Tensor], sites: tuple[int, ...], steps: int, batch: int
) -> tuple[list[Tensor], list[list[Tensor]]]:
    """For one block of ``steps`` steps: each call site's taps ``[steps, batch, out]``
    and the list each site's recorded inputs ``[steps, batch, in]`` go in once the
    block has run (before backward)."""
    recorded: list[list[Tensor]] = [[] for _ in sites]
    taps = [
        _BlockWeightGradient.apply(
            weights[w], into, torch.Size((steps, batch, weights[w].shape[0]))
        )
        for w, into in zip(sites, recorded, strict=True)
    ]
    return taps, recorded
