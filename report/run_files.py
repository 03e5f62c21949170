"""Reading what a report needs from a run directory's own files (config, status, validation lines of
the trace, the summary file), each failure a :class:`StoreError` naming the run or file -- through the
one reader of ``mtl.run.records``, so a damaged record reads here as it does everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Optional

from mtl.run.errors import RecordError
from mtl.run.layout import RunDirectory
from mtl.run.model import Status
from mtl.run.records import check_best_in_trace, read_config, read_status, steps_and_graders
from mtl.run.summary import Summary, read_run_summary
from mtl.run.trace import Line, read_validation_lines


class StoreError(RuntimeError):
    """A result store cannot be read; the message says which store and why."""


def read_run_for_report(run_dir: Path) -> tuple[dict[str, Any], Optional[Status], list[Line]]:
    """(config, status, validation lines) of a run directory, parsing only the trace lines that carry
    ``val/grader`` (training points are never reported). As everywhere: a torn final line is ignored; any
    other damaged line, or a status best point the trace does not hold, is an error."""
    config, status = config_and_status(run_dir)
    points = read_validation_points(run_dir)
    _check_best(run_dir, status, steps_and_graders(points))
    return config, status, points


def read_validation_points(run_dir: Path) -> list[Line]:
    """The validation lines of the run's trace (see :func:`read_run_for_report`)."""
    try:
        return read_validation_lines(RunDirectory(run_dir).metrics)
    except RecordError as exc:  # the store's own error, in the shared reader's words
        raise StoreError(str(exc)) from None


def config_and_status(run_dir: Path) -> tuple[dict[str, Any], Optional[Status]]:
    try:
        return read_config(run_dir) or {}, read_status(run_dir)
    except RecordError as exc:
        raise StoreError(str(exc)) from None


def read_current_summary(run_dir: Path) -> Optional[tuple[Summary, Optional[Status]]]:
    """(summary, status) of the run when its summary file is current (:func:`mtl.run.summary.read_run_summary`),
    else None; the status's best point must be among the summary's validation points."""
    try:
        summary = read_run_summary(run_dir)
        if summary is None:
            return None
        status = read_status(run_dir)
    except RecordError as exc:
        raise StoreError(str(exc)) from None
    _check_best(run_dir, status, zip(summary.validation.step, summary.validation.grader))
    return summary, status


def _check_best(run_dir: Path, status: Optional[Status], points: Iterable[tuple[Any, Any]]) -> None:
    try:
        check_best_in_trace(run_dir, status.best if status else None, points)
    except RecordError as exc:
        raise StoreError(str(exc)) from None
