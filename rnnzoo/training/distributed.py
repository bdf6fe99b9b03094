"""Data-parallel training under ``torchrun``: ranks, batch shards, collectives.

Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), every process
trains the same model on its own rows of every batch: ``trainer.batch_size`` is the
global batch, cut into ``WORLD_SIZE`` equal shares. The model is wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, which adds the gradients up
across ranks in the backward pass (:func:`sum_gradients`); each rank's loss is its
share of the global batch's mean loss, so the sum is the gradient one process
would compute for the whole batch. Rank 0 alone writes the run folder, W&B and the
gradient-flow probes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from rnnzoo.cell import State
from rnnzoo.errors import ConfigError, TrainingError
from rnnzoo.task import Batch


@dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel processes (one process: rank 0
    of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def share(self, n: int) -> tuple[int, int]:
        """This rank's rows ``[start, stop)`` of ``n``."""
        return self.rank * n // self.world, (self.rank + 1) * n // self.world

    def shard(self, batch: Batch) -> Batch:
        return batch.rows(*self.share(batch.batch_size)) if self.active else batch


#: the ranks of a run in one process
SINGLE = Ranks()


def sum_gradients(state, bucket):
    # (no annotations: DDP compares them with its own types, and here they are strings)
    """A DDP communication hook that adds the ranks' gradients up (DDP's default
    averages them): each rank's loss is already its share of the global batch's
    mean, so the sum is the global gradient, and every ``dL/dh_t`` a per-step
    controller sees is the one a single process would see."""
    work = dist.all_reduce(bucket.buffer(), async_op=True)
    assert work is not None
    return work.get_future().then(lambda done: done.value()[0])


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(cfg: DictConfig) -> Ranks:
    """Join the process group the launcher set up (``MASTER_ADDR``, ``RANK``, ...):
    gloo on the CPU, NCCL on CUDA, or ``trainer.dist_backend``; collectives give up
    after ``trainer.dist_timeout`` seconds. One process: no group, rank 0 of 1."""
    if not launched():
        return SINGLE
    t = cfg.trainer
    if t.batch_size % int(os.environ["WORLD_SIZE"]):
        raise ConfigError(
            f"trainer.batch_size={t.batch_size} is the global batch, shared by "
            f"{os.environ['WORLD_SIZE']} processes; it must divide evenly. Choose a "
            "multiple of the number of processes."
        )
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = t.device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        backend = t.dist_backend or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend, timeout=timedelta(seconds=t.dist_timeout))
    return Ranks(dist.get_rank(), dist.get_world_size(), local)


def leave(ranks: Ranks) -> None:
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()


def device_name(ranks: Ranks, name: str) -> str:
    """``trainer.device`` for this rank: each process on its own GPU."""
    if ranks.active and name in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ranks.local_rank}"
    return name


def sum_all(ranks: Ranks, values: list[float], device: torch.device) -> list[float]:
    """``values`` added up over every rank (as they are, in one process)."""
    if not ranks.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return [float(v) for v in tensor.tolist()]


def same_everywhere(ranks: Ranks, value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object)."""
    if not ranks.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_rows(ranks: Ranks, state: list[State] | None) -> list[State] | None:
    """Every rank's rows of a carried state, in rank order: the whole batch's."""
    if not ranks.active or state is None:
        return state
    out = []
    for layer in state:
        whole = []
        for part in layer:
            pieces = [torch.empty_like(part) for _ in range(ranks.world)]
            dist.all_gather(pieces, part.contiguous())
            whole.append(torch.cat(pieces))
        out.append(tuple(whole))
    return out


def my_rows(ranks: Ranks, state: list[State] | None) -> list[State] | None:
    """This rank's rows of a whole-batch carried state."""
    if not ranks.active or state is None:
        return state
    start, stop = ranks.share(state[0][0].shape[0])
    return [tuple(t[start:stop] for t in layer) for layer in state]


def lost_contact(ranks: Ranks, exc: BaseException) -> TrainingError:
    return TrainingError(
        f"Process {ranks.rank} of {ranks.world} lost contact with the others "
        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}): "
        "one of them stopped or a collective timed out (trainer.dist_timeout). The "
        "last checkpoint is intact; continue with `torchrun ... -m rnnzoo train "
        "--resume RUN_DIR`, on any number of processes."
    )


def is_comm_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from the process group (a peer gone, a timeout)."""
    if not isinstance(exc, RuntimeError):
        return False
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return any(word in text for word in ("gloo", "Gloo", "NCCL", "Connection", "timed out"))
