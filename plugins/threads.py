"""CPU thread count during training (``trainer.threads``), as a plugin on the
event hooks.

``trainer.threads: N`` runs torch with N threads. ``auto`` (the default), on the
CPU, times training steps at 1 thread and at every core this process may use
(shared out among torchrun's ranks on the machine), a few steps each in turns,
keeps the faster, logs it as ``perf/threads`` (and ``perf/threads_gain``, how
many times slower the other count was), and measures again after every
minute of training, so a machine that becomes busy, or idle, is followed. Five
steps in a row at more threads that take twice as long as measured, and longer
than 1 thread did, switch to 1 thread at once (logged without a gain), until the
next measurement. The
chooser is :class:`rnnzoo.threads.ThreadChooser`; a step's time here is the time
from one ``rnnzoo_step_end`` to the next, and the steps around an evaluation,
checkpoint, gradient-flow probe or logging step are not timed.

With the thread count (pinned, or ``auto``'s first choice) the run logs
``perf/omp_passive``: 1 when OpenMP's threads wait passively, 0 when they spin
first (the command line chooses at launch, from how busy the machine is:
:mod:`rnnzoo.waitpolicy`).

``auto`` leaves the count alone on CUDA, and where the user chose it:
``OMP_NUM_THREADS`` set (except torchrun's own ``1``), or a count set with
``torch.set_num_threads`` that is not one torch starts with. The count in force
when training started is restored when it ends.

Thread counts change the order in which floating-point sums are added, not what
is computed: a run resumed at another thread count continues within float
round-off, not bit for bit. Pin ``trainer.threads`` (or ``OMP_NUM_THREADS``) for
bit-exact repeats.
"""

from __future__ import annotations

import os
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from rnnzoo import hookimpl, threads, waitpolicy
from rnnzoo.events import TrainingRun, busy_every
from rnnzoo.threads import ThreadChooser


@dataclass
class _Auto:
    chooser: ThreadChooser
    #: step intervals after which the loop evaluates, checkpoints or probes
    busy_every: tuple[int, ...]
    last: float = 0.0
    skipped: int = 0
    #: logged with the first choice
    policy: dict[str, float] = field(default_factory=dict)


#: per run: the automatic choice, if any
_active: weakref.WeakKeyDictionary[Any, _Auto] = weakref.WeakKeyDictionary()
#: per run: the thread count at its start, and whether rnnzoo had set it
_before: weakref.WeakKeyDictionary[Any, tuple[int, bool]] = weakref.WeakKeyDictionary()


@hookimpl
def rnnzoo_train_start(run: TrainingRun) -> None:
    policy = {"perf/omp_passive": float(waitpolicy.passive(os.environ))}
    setting = str(run.config.trainer.threads)
    before = torch.get_num_threads()
    if setting != "auto":
        _before[run] = (before, threads.set_by_rnnzoo())
        threads.set_threads(int(setting))
        run.log({"perf/threads": int(setting), **policy})
        return
    cores = threads.available_cores()
    if run.device.type != "cpu" or cores < 2 or threads.user_choice() is not None:
        return
    _before[run] = (before, threads.set_by_rnnzoo())
    # start at one thread: where more threads are far slower, that costs least
    chooser = ThreadChooser(options=(1, cores), start=1)
    threads.set_threads(chooser.threads())
    _active[run] = _Auto(chooser, busy_every(run.config), time.perf_counter(), policy=policy)


@hookimpl
def rnnzoo_step_end(run: TrainingRun, step: int) -> None:
    auto = _active.get(run)
    if auto is None:
        return
    seconds = time.perf_counter() - auto.last
    # the previous step was followed by an evaluation, checkpoint or probe: not
    # timed (unless that is every step)
    if any((step - 1) % n == 0 for n in auto.busy_every) and auto.skipped < 2:
        auto.skipped += 1
    else:
        auto.skipped = 0
        chosen = auto.chooser.record(seconds)
        if chosen is not None:
            means = auto.chooser.means()
            row = {"perf/threads": chosen, **auto.policy}
            if chosen in means:  # not after a slowdown, which measured nothing
                row["perf/threads_gain"] = round(max(means.values()) / means[chosen], 3)
            run.log(row)
            auto.policy = {}
        threads.set_threads(auto.chooser.threads())
    auto.last = time.perf_counter()


@hookimpl
def rnnzoo_train_end(run: TrainingRun) -> None:
    _active.pop(run, None)
    before = _before.pop(run, None)
    if before is not None:
        threads.restore(*before)
