"""How OpenMP's threads wait, chosen by the command line before torch loads.

An OpenMP thread that has finished its share of a parallel region waits for the
next one. By default it spins for a while, then sleeps; ``OMP_WAIT_POLICY=PASSIVE``
makes it sleep at once. Which is faster depends on whether other work wants the
cores (docs/performance.md, measured with two threads on two cores):

* **the cores are busy with other jobs**: spinning threads take the cores the
  working threads need. Training at two spinning threads was several times
  slower than at one; waiting passively helps, and it makes the steps that
  ``trainer.threads: auto`` spends at more threads cheaper;
* **the cores are idle**: a sleeping thread is slow to wake, and a small recurrent
  model wakes them hundreds of times per step. Two passively waiting threads were
  several times slower than one, and ``auto`` kept one thread, while two spinning
  threads were faster than one.

OpenMP reads the policy once, when torch loads it, so ``rnnzoo train`` chooses it
at launch, before anything imports torch: it samples for :data:`SAMPLE_S` how much
of the CPUs it may run on other processes use (Linux: ``/proc/stat``). When they
keep :data:`BUSY_CORES` or more busy, threads wait passively; otherwise OpenMP's
default stays. ``auto`` then measures thread counts under that policy, and follows
a machine that becomes busy later (one thread does not wait at all).

Threads also wait passively, without a sample, where one cannot be trusted or the
cores are shared by design: every command but ``train``; not Linux; a CPU quota
(cgroup ``cpu.max``) below the CPUs the process may use, whose spinning would spend
the quota; data-parallel ranks on one machine (``LOCAL_WORLD_SIZE`` above 1); and
the runs of a grid that runs several at once (:func:`for_runs`). A value the user
set is kept. This module does not import torch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from pathlib import Path

VARIABLE = "OMP_WAIT_POLICY"
PASSIVE = "PASSIVE"
#: how long the CPUs are watched at launch: ten clock ticks per CPU at Linux's usual
#: 100 Hz, enough to tell half a core from none, and short beside torch's import
SAMPLE_S = 0.1
#: other processes keeping this many of our CPUs busy count as a busy machine. Two
#: busy processes on two cores made spinning threads three times slower
#: (docs/performance.md); half a core is a margin on the safe side, since short
#: bursts of other work then choose the passive policy, as the command line always
#: did before it measured
BUSY_CORES = 0.5
#: the group options of the command line that take a value (``-p FILE``)
_VALUED_OPTIONS = ("-p", "--plugin")


def command_of(args: Sequence[str]) -> str | None:
    """The command named on a command line (``args`` without the program), or None."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _VALUED_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def busy_ticks(stat: str, cpus: Iterable[int]) -> tuple[int, int] | None:
    """``(busy, total)`` clock ticks of ``cpus`` in the text of ``/proc/stat``, or
    None unless every one of them is listed; idle and waiting for I/O are not
    busy, time taken by the hypervisor (steal) is."""
    wanted = {f"cpu{n}" for n in cpus}
    busy = total = found = 0
    for line in stat.splitlines():
        name, *fields = line.split()
        if name in wanted:
            found += 1
            user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[:8])
            spent = user + nice + system + idle + iowait + irq + softirq + steal
            total += spent
            busy += spent - idle - iowait
    return (busy, total) if found == len(wanted) else None


def cpu_quota() -> float | None:
    """The CPUs' worth of time the process's cgroup may use (``cpu.max``), or None
    where no quota is set or none can be read."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def others_busy_cores(sample_s: float = SAMPLE_S) -> float | None:
    """How many of this process's CPUs other processes kept busy over ``sample_s``
    (this process sleeps meanwhile), or None where that cannot be read."""
    try:
        cpus = os.sched_getaffinity(0)
        quota = cpu_quota()
        if quota is not None and quota < len(cpus):
            return None  # the host's idle cores are not this process's to spin on
        stat = Path("/proc/stat")
        before = busy_ticks(stat.read_text(encoding="ascii"), cpus)
        time.sleep(sample_s)
        after = busy_ticks(stat.read_text(encoding="ascii"), cpus)
    except (AttributeError, OSError, ValueError):  # not Linux, or a /proc it cannot read
        return None
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1]) * len(cpus)


def _local_ranks(environ: Mapping[str, str]) -> int:
    """Data-parallel ranks on this machine (torchrun's ``LOCAL_WORLD_SIZE``)."""
    try:
        return int(environ.get("LOCAL_WORLD_SIZE") or 1)
    except ValueError:
        return 1


#: whether :func:`choose` set the policy in this process (not the user)
_chosen = False


def choose(
    environ: MutableMapping[str, str],
    args: Sequence[str],
    measure: Callable[[], float | None] | None = None,
) -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` for the command line ``args``
    (without the program's name), or leave it unset where ``rnnzoo train`` finds
    the CPUs idle: fewer than :data:`BUSY_CORES` kept busy by others, as
    ``measure`` (default :func:`others_busy_cores`) says. A value already in
    ``environ`` is the user's and is kept."""
    global _chosen
    if VARIABLE in environ:
        return
    if command_of(args) == "train" and _local_ranks(environ) <= 1:
        busy = (measure or others_busy_cores)()
        if busy is not None and busy < BUSY_CORES:
            return  # idle: OpenMP's default (spin, then sleep)
    environ[VARIABLE] = PASSIVE
    _chosen = True


def for_runs(environ: Mapping[str, str], jobs: int) -> dict[str, str]:
    """The environment for the ``rnnzoo train`` processes of a grid running ``jobs``
    at once: several share the cores by design, so their threads wait passively;
    one alone chooses for itself at its own launch. A policy this process chose
    is not passed on as if the user had set it; the user's own is."""
    env = dict(environ)
    if _chosen:
        env.pop(VARIABLE, None)
    if jobs > 1:
        env.setdefault(VARIABLE, PASSIVE)
    return env


def passive(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` makes OpenMP's threads wait passively."""
    return environ.get(VARIABLE, "").strip().upper() == PASSIVE
