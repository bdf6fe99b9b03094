"""How many CPU threads torch should use: the cores this process may use, whether
the user chose a count, and a chooser that measures training steps at 1 thread and
at all cores, in turns, and picks the faster.

The chooser is fed measured step times and never looks at a clock itself, so the
decision can be tested with made-up timings. ``rnnzoo_plugins.threads`` runs it
during training (``trainer.threads: auto``).

Why measure: on a machine shared with other jobs, OpenMP threads that wait for
each other (or spin while a busy core runs someone else's work) can make two
threads several times slower than one; on an idle machine two threads may be
faster. Which one wins depends on the model, the machine and the load, and the
load changes, so the choice is measured, and measured again every so often.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch


def available_cores() -> int:
    """Cores this process may run on, shared out among the data-parallel ranks of
    this machine (``LOCAL_WORLD_SIZE``, set by torchrun); at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    try:
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        ranks = 1
    return max(1, cores // ranks)


def physical_cores() -> int | None:
    """Physical cores among the CPUs this process may use (Linux), or None."""
    try:
        cpus = os.sched_getaffinity(0)
        cores = set()
        for cpu in cpus:
            topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
            package = (topology / "physical_package_id").read_text().strip()
            cores.add((package, (topology / "core_id").read_text().strip()))
        return len(cores) or None
    except (AttributeError, OSError):
        return None


def user_choice() -> str | None:
    """Why the thread count is the user's choice and not to be changed, or None.

    ``OMP_NUM_THREADS`` in the environment is the user's choice, except ``1`` under
    torchrun (``LOCAL_WORLD_SIZE`` set), which torchrun sets by itself when it is
    unset. A torch thread count that is none of the counts torch starts with (the
    cores, physical or logical) was set with ``torch.set_num_threads``.
    """
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp and not (omp == "1" and "LOCAL_WORLD_SIZE" in os.environ):
        return f"OMP_NUM_THREADS={omp}"
    current = torch.get_num_threads()
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    defaults = {affinity, os.cpu_count(), physical_cores(), _last_set}
    if current not in defaults:
        return f"torch.set_num_threads({current})"
    return None


#: the count :func:`set_threads` last set in this process (not the user's choice)
_last_set: int | None = None


def set_threads(count: int) -> None:
    """Run torch with ``count`` threads (rnnzoo's choice, not the user's)."""
    global _last_set
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    _last_set = count


def set_by_rnnzoo() -> bool:
    """Whether the current count is one :func:`set_threads` set."""
    return torch.get_num_threads() == _last_set


def restore(count: int, ours: bool) -> None:
    """Put back the count found at the start of a run (``ours``: rnnzoo had set it)."""
    global _last_set
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    _last_set = count if ours else None


@dataclass
class ThreadChooser:
    """Measures step times at each of ``options`` (thread counts) in turns and
    picks the fastest; measures again after ``recheck_s`` seconds of training.

    Call :meth:`threads` for the count to run the next step at, and
    :meth:`record` with that step's time. A measurement runs ``rounds`` rounds;
    in each, every option runs ``settle`` steps that are not timed (the switch and
    its first step) and then ``per_block`` timed steps, the order rotating from
    round to round. Options are compared by their mean step time (the slowest
    step left out), the time the whole run would take at each: on a busy machine the typical (median) step
    at one thread can be the faster while every few steps wait for a core, so
    that the run is slower. A measurement ends early once, after a full round,
    one option's mean is ``decisive`` times another's, or as soon as two steps at
    an option both took that long: there is no point in running many steps at a
    setting three times slower. Options within ``tolerance`` of the fastest
    count as just as fast, and then the fewest threads win (they leave cores to
    other work and vary less). Between measurements at more than the fewest
    threads, ``watch`` steps in a row that were each slow (:meth:`_slow_step`)
    switch to the fewest threads at once, until the next regular measurement:
    other work has taken the cores, and threads that wait for each other can then
    slow every step many times over, too costly to wait ``recheck_s`` for, and
    too noisy while the load sets in to measure well. At the fewest threads
    nothing waits for another thread; slower steps there are the machine's, and
    the regular re-check follows them.
    """

    options: tuple[int, ...]
    start: int
    per_block: int = 3
    rounds: int = 3
    settle: int = 1
    warmup: int = 2
    recheck_s: float = 60.0
    recheck_rounds: int = 2
    decisive: float = 2.0
    tolerance: float = 0.03
    #: one or two slow steps are a hiccup (a page fault, a burst of other work);
    #: five in a row at twice the time are other work that stays
    watch: int = 5
    chosen: int | None = None
    #: a step at least this long counts as slow (None: not watched)
    slow_step: float | None = None
    #: slow steps in a row since the last measurement
    slow_in_a_row: int = 0
    #: (threads, timed) for each step still to run in the current measurement
    plan: list[tuple[int, bool]] = field(default_factory=list)
    samples: dict[int, list[float]] = field(default_factory=dict)
    since_check: float = 0.0

    def __post_init__(self) -> None:
        self.plan = [(self.start, False)] * self.warmup + self._schedule(self.rounds, self.start)

    def _schedule(self, rounds: int, first: int) -> list[tuple[int, bool]]:
        order = sorted(self.options, key=lambda n: n != first)  # begin where we are
        plan: list[tuple[int, bool]] = []
        for r in range(rounds):
            turn = order[r % len(order) :] + order[: r % len(order)]
            for n in turn:
                plan += [(n, False)] * self.settle + [(n, True)] * self.per_block
        self.samples = {n: [] for n in self.options}
        return plan

    @property
    def measuring(self) -> bool:
        return bool(self.plan)

    def threads(self) -> int:
        """The thread count for the next step."""
        if self.plan:
            return self.plan[0][0]
        return self.chosen if self.chosen is not None else self.start

    def record(self, seconds: float) -> int | None:
        """The time of the step just run at :meth:`threads`. Returns the count
        chosen when this step ended a measurement or a slowdown set it, else None."""
        if not self.plan:
            self.since_check += seconds
            slow = self.slow_step is not None and seconds >= self.slow_step
            self.slow_in_a_row = self.slow_in_a_row + 1 if slow else 0
            if self.slow_in_a_row >= self.watch:  # other work took the cores
                fewest = min(self.options)
                self.chosen, self.slow_step, self.slow_in_a_row = fewest, None, 0
                self.samples = {n: [] for n in self.options}  # nothing measured for it
                self.since_check = 0.0
                return fewest
            if self.since_check >= self.recheck_s:
                self.since_check = 0.0
                self.plan = self._schedule(self.recheck_rounds, self.threads())
            return None
        threads, timed = self.plan.pop(0)
        if timed:
            self.samples[threads].append(seconds)
        if not self.plan or self._far_slower(threads) or (self._round_done() and self._decided()):
            self.plan = []
            self.chosen = self.best()
            self.slow_step = self._slow_step()
            return self.chosen
        return None

    def _slow_step(self) -> float | None:
        """How long a step at the count just chosen must take to count as slow:
        ``decisive`` times its slowest timed step (the slowest but one once there
        are three: one hiccup must not switch the watch off), and the slowest,
        not the mean, because steps of a task whose sequences vary in length vary
        too; and no shorter than the fewest threads' mean step, so that switching
        helps. None at the fewest threads, which are not watched."""
        fewest = min(self.options)
        if self.chosen is None or self.chosen == fewest:
            return None
        timed = sorted(self.samples.get(self.chosen, []))
        if not timed:
            return None
        slowest = timed[-2] if len(timed) >= 3 else timed[-1]
        return max(self.decisive * slowest, self.means().get(fewest, 0.0))

    def _far_slower(self, threads: int) -> bool:
        """Two steps at ``threads`` both took ``decisive`` times the mean of an
        option already measured: stop trying it (one slow step may be a hiccup)."""
        own = self.samples[threads]
        others = [t for n, t in self.means().items() if n != threads]
        return len(own) >= 2 and bool(others) and min(own) >= self.decisive * min(others)

    def _round_done(self) -> bool:
        counts = {len(s) for s in self.samples.values()}
        return len(counts) == 1 and counts != {0} and next(iter(counts)) % self.per_block == 0

    def _decided(self) -> bool:
        means = self.means()
        return max(means.values()) >= self.decisive * min(means.values())

    def means(self) -> dict[int, float]:
        """The mean timed step of each option measured so far, its slowest step left
        out once there are three: one hiccup (a page fault, another job's burst)
        must not decide for the next minute."""
        return {
            n: statistics.fmean(sorted(s)[:-1] if len(s) >= 3 else s)
            for n, s in self.samples.items()
            if s
        }

    def best(self) -> int:
        """The fewest threads whose mean step time is within ``tolerance`` of the
        fastest (the current count when nothing was timed)."""
        means = self.means()
        if not means:
            return self.threads()
        fastest = min(means.values())
        return min(n for n, t in means.items() if t <= fastest * (1 + self.tolerance))
