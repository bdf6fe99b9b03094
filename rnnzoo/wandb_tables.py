"""W&B tables, sent at once or within a share of the run's time.

A W&B table costs W&B's Python about 10 ms to build and log, and a line chart
about 6 ms more, whatever the model (``benchmarks/step_parts.py``). On the
sender's thread (:mod:`rnnzoo.wandb_sender`) that time still competes with the
training thread for the interpreter: for a model whose step takes a few
milliseconds, a table at every gradient-flow probe slows training by several
percent (docs/performance.md).

A table logged with a ``share`` is sent only while the time W&B has spent on that
key's tables, the next one included (estimated by the last one), stays within
``share`` of the training thread's time since the tracker started, and no earlier
table of the key is still on its way. Times are CPU times of the threads
(``time.thread_time``: the sender's for a table, the training thread's for the
run), so that a run waiting for a busy machine's cores earns no extra tables. Rows that have to wait go
out with the next table of the key that is sent, or when the run ends, so no row
is lost: such a table holds the rows of several calls, and its rows should say
which step they belong to. The line chart of a table is drawn from the rows of
the newest call alone. Without a ``share`` every call is sent as its own table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rnnzoo import wandb_support

Line = tuple[str, str, str]


@dataclass
class _Key:
    """One key's rows waiting to be sent, and what its tables have cost."""

    columns: list[str]
    line: Line | None
    rows: list[list[Any]] = field(default_factory=list)
    newest: list[list[Any]] = field(default_factory=list)
    spent: float = 0.0
    cost: float = 0.0
    #: a table of the key is on its way (its cost is not known yet)
    sending: bool = False


class Tables:
    """Turns :meth:`add` calls into W&B calls, each to be run on the sender's thread."""

    def __init__(self) -> None:
        self._started = time.thread_time()
        self._keys: dict[str, _Key] = {}

    def add(
        self,
        run: Any,
        step: int,
        key: str,
        columns: Sequence[str],
        rows: list[list[Any]],
        line: Line | None,
        share: float | None,
    ) -> list[Callable[[], None]]:
        """The W&B calls that log ``rows`` (with the rows of ``key`` still waiting)
        at ``step``: none when they wait for a later table; rows waiting under
        other columns first, as a table of their own."""
        calls = []
        pending = self._keys.get(key)
        if pending is None or pending.columns != list(columns) or pending.line != line:
            if pending is not None and pending.rows:
                calls.append(self._take(run, step, key, pending))
            pending = self._keys[key] = _Key(list(columns), line)
        pending.rows += rows
        pending.newest = rows
        if share is not None:
            budget = share * (time.thread_time() - self._started)
            if pending.sending or pending.spent + pending.cost > budget:
                return calls
        return [*calls, self._take(run, step, key, pending)]

    def rest(self, run: Any, step: int) -> list[Callable[[], None]]:
        """The W&B calls that log every row still waiting, at ``step``."""
        return [self._take(run, step, k, p) for k, p in self._keys.items() if p.rows]

    def _take(self, run: Any, step: int, key: str, pending: _Key) -> Callable[[], None]:
        rows, newest = pending.rows, pending.newest
        pending.rows, pending.sending = [], True
        columns, line = pending.columns, pending.line

        def send() -> None:
            import wandb

            started = time.thread_time()
            try:
                table = wandb.Table(columns=list[Any](columns), data=rows)
                media: dict[str, Any] = {key: table}
                if line is not None:
                    media[f"{key}_plot"] = wandb_support.line_chart(columns, newest, *line)
                run.log({**media, "trainer/step": step})
            finally:
                pending.cost = time.thread_time() - started
                pending.spent += pending.cost
                pending.sending = False

        return send
