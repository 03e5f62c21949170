"""The errors of the run package: a damaged or disagreeing record, and a directory that refuses a run."""

from __future__ import annotations


class RecordError(ValueError):
    """A run's records are damaged or disagree; the message names the file (and line or field)."""


class RunRefused(RuntimeError):
    """The run directory holds a different run (code or hyperparameters), or another process owns it."""


class RunLocked(RunRefused):
    """Another live process holds the run directory's lock."""
