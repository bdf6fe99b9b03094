"""The grid of a multirun: ``key=a,b,c`` overrides expanded into one run each.

Hydra's multirun syntax: an override whose value holds top-level commas is swept,
every other override is fixed, and the grid is the cartesian product of the swept
values (the first swept key changes slowest). Commas inside brackets, braces,
parentheses or quotes do not split (``task.spikes=[1,2]`` is one value, so is
``tracking.name='a,b'``). Pure functions: nothing here starts a process.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from rnnzoo.config import normalize_overrides
from rnnzoo.errors import UsageError

OPENERS = {"[": "]", "{": "}", "(": ")"}
QUOTES = ("'", '"')
#: characters kept in a run folder's short description; others become "_"
UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
MAX_SLUG = 80


@dataclass(frozen=True)
class Job:
    """One point of the grid: its number, every override it runs with, and the
    swept ones (what tells it apart from the other runs)."""

    n: int
    overrides: tuple[str, ...]
    swept: tuple[str, ...]

    @property
    def label(self) -> str:
        """``model.cell=gru trainer.seed=0``, or ``the experiment as given``."""
        return " ".join(self.swept) or "the experiment as given"

    @property
    def folder_name(self) -> str:
        """``3-cell=gru,seed=0``: the number, then the swept values with the last
        part of each key."""
        parts = [
            f"{k.rsplit('.', 1)[-1]}={v}" for k, _, v in (s.partition("=") for s in self.swept)
        ]
        slug = UNSAFE.sub("_", ",".join(parts))[:MAX_SLUG]
        return f"{self.n}-{slug or 'run'}"


def split_values(override: str) -> list[str]:
    """The comma-separated values of ``key=value``'s value, split at top-level
    commas only (outside brackets and quotes), each stripped of spaces."""
    _, _, value = override.partition("=")
    items, current, stack, quote = [], "", [], ""
    for char in value:
        if quote:
            quote = "" if char == quote else quote
        elif char in QUOTES and (not current.strip() or current.rstrip()[-1] in "[{(,:"):
            quote = char  # a quote opens a value (it's: an apostrophe)
        elif char in OPENERS:
            stack.append(OPENERS[char])
        elif char in OPENERS.values():
            if not stack or stack.pop() != char:
                raise _unbalanced(override, f"a '{char}' that closes nothing")
        elif char == "," and not stack:
            items.append(current.strip())
            current = ""
            continue
        current += char
    if quote:
        raise _unbalanced(override, f"an unclosed {quote}")
    if stack:
        raise _unbalanced(override, f"an unclosed bracket (expected '{stack[-1]}')")
    items.append(current.strip())
    if len(items) > 1 and "" in items:
        raise UsageError(
            f"Override '{override}' has an empty value in its list (two commas in a row, "
            "or one at the start or end). Write each value once: key=a,b,c."
        )
    return items


def _unbalanced(override: str, what: str) -> UsageError:
    return UsageError(
        f"Override '{override}' has {what}, so its values cannot be split. Close every "
        "bracket and quote; quote a value that holds a comma (key='a,b' — in the shell, "
        "\"key='a,b'\")."
    )


def parse(overrides: list[str] | tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """``[(key, values), ...]`` in the order given; ``--key=value`` and ``--key
    value`` are read as ``key=value``. A key given twice, or a value listed twice,
    is an error: the grid would be ambiguous or run one configuration twice."""
    parsed: list[tuple[str, list[str]]] = []
    seen: dict[str, str] = {}
    for override in normalize_overrides(list(overrides)):
        key = override.partition("=")[0].strip()  # normalize_overrides refused no key
        if key in seen:
            raise UsageError(
                f"'{key}' is given twice ({seen[key]} and {override}). Give it once, with "
                f"every value in one list: {key}=a,b."
            )
        seen[key] = override
        values = split_values(override)
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise UsageError(
                f"Override '{override}' lists {', '.join(repr(v) for v in repeated)} more "
                "than once; the grid would train the same configuration twice. List each "
                "value once (seeds go in trainer.seed=0,1,2)."
            )
        parsed.append((key, values))
    return parsed


def expand(overrides: list[str] | tuple[str, ...]) -> list[Job]:
    """Every combination of the swept values, numbered from 0, in
    :func:`itertools.product` order of the keys as given."""
    parsed = parse(overrides)
    swept = {key for key, values in parsed if len(values) > 1}
    jobs = []
    for n, combo in enumerate(itertools.product(*(values for _, values in parsed))):
        chosen = [f"{key}={value}" for (key, _), value in zip(parsed, combo, strict=True)]
        jobs.append(
            Job(
                n=n,
                overrides=tuple(chosen),
                swept=tuple(c for c, (key, _) in zip(chosen, parsed, strict=True) if key in swept),
            )
        )
    return jobs


def has_key(overrides: list[str] | tuple[str, ...], key: str) -> bool:
    """Whether ``key`` is among the (normalized) overrides."""
    return any(o.partition("=")[0].strip() == key for o in normalize_overrides(list(overrides)))
