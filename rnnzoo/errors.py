"""Errors that reach the user as one paragraph instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RnnzooError(Exception):
    """Base class of the errors the CLI prints as a message; exit code 1."""

    exit_code = 1


class UsageError(RnnzooError):
    """The user asked for something that cannot work as written; exit code 2."""

    exit_code = 2


class PluginError(UsageError):
    """A plugin failed to load or broke the contract."""


class ConfigError(UsageError):
    """A configuration key or value is wrong."""


class DataError(UsageError):
    """A data file is missing, empty or malformed."""


class CheckpointError(UsageError):
    """A checkpoint cannot be read or does not fit the run."""


class TrainingError(RnnzooError):
    """Training could not go on (for example non-finite values)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


class DivergedError(TrainingError):
    """Training stopped because the loss or the gradients stayed non-finite;
    exit code 3, so that a job script can tell it from a crash (1)."""

    exit_code = 3
