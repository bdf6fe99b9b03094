"""W&B tables, sent at once or within a share of the run's time.

A W&B table costs W&B's Python about 10 ms to build and log, and a line chart
about 6 ms more, whatever the model (``benchmarks/step_parts.py``). That time is
spent in the W&B process (:mod:`rnnzoo.wandb_worker`), beside training, but on a
machine whose cores are all busy it still competes with training for them.

A table logged with a ``share`` is sent only while the time W&B has spent on that
key's tables stays within ``share`` of the training thread's time since the key's
first table (:class:`rnnzoo.timeshare.TimeShare`, CPU times: the W&B process
reports each table's), and no earlier table of the key is still on its way; the
first table goes at once, so the share holds on average over a run, not table by
table. :class:`Tables` is to be used from one thread, the training thread.

Rows that have to wait go out with the next table of the key that is sent, when
they would make a table longer than W&B keeps (:data:`MAX_ROWS`), before a
checkpoint is written (a resumed run repeats only what came after it) or when the
run ends: such a table holds the rows of several calls, and its rows should say
which step they belong to. The line chart of a table is drawn from the rows of
the newest call alone. Without a ``share`` every call is sent as its own table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rnnzoo.timeshare import TimeShare

Line = tuple[str, str, str]
#: rows W&B keeps of a logged table (``wandb.Table.MAX_ROWS``); it drops the rest
MAX_ROWS = 10_000


def check(
    key: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    line: Line | None,
    share: float | None,
) -> None:
    """A plugin's mistake in a ``log_table`` call is its own ``ValueError``, not
    W&B's: each row has one value per column, ``line`` names columns, ``share``
    is None or a number > 0."""
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(
                f"log_table({key!r}): a row has {len(row)} values for {len(columns)} "
                f"columns ({', '.join(columns)})."
            )
    if line is not None and not set(line) <= set(columns):
        raise ValueError(f"log_table({key!r}): line={line} names columns not in {list(columns)}.")
    if share is not None and not 0 < share < math.inf:
        raise ValueError(f"log_table({key!r}): share={share}; give a number > 0, or None.")


@dataclass
class _Key:
    """One key's rows waiting to be sent, and what its tables have cost."""

    columns: list[str]
    line: Line | None
    budget: TimeShare
    rows: list[list[Any]] = field(default_factory=list)
    newest: list[list[Any]] = field(default_factory=list)
    #: tables of the key taken, and reported sent by the W&B process: the
    #: difference is on its way
    taken: int = 0
    sent: int = 0


#: a table for the W&B process: ``("table", step, key, columns, rows, newest, line)``
Message = tuple[str, int, str, list[str], list[list[Any]], list[list[Any]], Line | None]


class Tables:
    """Turns :meth:`add` calls into table messages for the W&B process
    (:meth:`rnnzoo.wandb_worker.Worker.table`)."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}

    def add(
        self,
        step: int,
        key: str,
        columns: Sequence[str],
        rows: list[list[Any]],
        line: Line | None,
        share: float | None,
    ) -> list[Message]:
        """The messages that log ``rows`` (with the rows of ``key`` still waiting)
        at ``step``: none when they wait for a later table; waiting rows under
        other columns, or too many to join these, first, as a table of their own."""
        calls: list[Message] = []
        pending = self._keys.get(key)
        if pending is None or pending.columns != list(columns) or pending.line != line:
            if pending is not None and pending.rows:
                calls.append(self._take(step, key, pending))
            if pending is None:
                pending = _Key(list(columns), line, TimeShare())
            else:  # the same budget, and tables on their way still counted
                pending = _Key(
                    list(columns), line, pending.budget, [], [], pending.taken, pending.sent
                )
            self._keys[key] = pending
        elif pending.rows and len(pending.rows) + len(rows) > MAX_ROWS:
            calls.append(self._take(step, key, pending))
        if rows:
            pending.rows += rows
            pending.newest = rows
        if not pending.rows:
            return calls
        if share is not None and (pending.taken > pending.sent or not pending.budget.allows(share)):
            return calls
        return [*calls, self._take(step, key, pending)]

    def rest(self, step: int) -> list[Message]:
        """The messages that log every row still waiting, at ``step``."""
        return [self._take(step, k, p) for k, p in self._keys.items() if p.rows]

    def sent(self, key: str, cost: float) -> None:
        """The W&B process has logged a table of ``key`` in ``cost`` CPU seconds."""
        pending = self._keys[key]
        pending.sent += 1
        pending.budget.charge(cost)

    def _take(self, step: int, key: str, pending: _Key) -> Message:
        rows, newest = pending.rows, pending.newest
        pending.rows = []
        pending.taken += 1
        return ("table", step, key, pending.columns, rows, newest, pending.line)
