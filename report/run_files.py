"""Reading what a report needs from a run directory's own files (config, status, validation lines of
the trace, the summary file), each failure a :class:`StoreError` naming the run or file -- through the
validating reader of ``mtl.records``, so a damaged record reads here as it does everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mtl.records import RecordError, check_best_recorded, read_status_checked, validation_points_of
from mtl.run_summary import headline_points, read_run_summary
from mtl.rundir import RunDirectory, read_config


class StoreError(RuntimeError):
    """A result store cannot be read; the message says which store and why."""


def read_run_for_report(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(config, status, validation points) of a run directory, parsing only the metric lines that carry
    ``val/grader`` (training points are never reported). As in ``mtl.records``: a torn final line is
    ignored; any other damaged line, or a status best point the trace does not hold, is an error."""
    config, status = config_and_status(run_dir)
    points = read_validation_points(run_dir)
    _check_best(run_dir, status, points)
    return config, status, points


def read_validation_points(run_dir: Path) -> list[dict[str, Any]]:
    """The validation points of the run's trace (see :func:`read_run_for_report`)."""
    metrics_path = RunDirectory(run_dir).metrics
    try:
        text = metrics_path.read_text() if metrics_path.exists() else ""
        return validation_points_of(text, metrics_path)
    except RecordError as exc:  # the store's own error, in the shared reader's words
        raise StoreError(str(exc)) from None
    except OSError as exc:
        raise StoreError(f"cannot read run directory {run_dir}: {exc}") from None


def config_and_status(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    config_path = RunDirectory(run_dir).config_path
    try:
        status = read_status_checked(run_dir)
        config = read_config(run_dir) or {}
    except RecordError as exc:
        raise StoreError(str(exc)) from None
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise StoreError(f"cannot read run directory {run_dir}: {exc}") from None
    if not isinstance(config, dict):
        raise StoreError(f"{config_path}: expected a mapping of config keys, got {type(config).__name__}")
    return config, status


def read_current_summary(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(summary, status) of the run when its summary file is current (:func:`mtl.run_summary.read_run_summary`),
    else None; the status's best point must be among the summary's validation points."""
    try:
        summary = read_run_summary(run_dir)
        if summary is None:
            return None
        status = read_status_checked(run_dir)
    except RecordError as exc:
        raise StoreError(str(exc)) from None
    except (OSError, ValueError) as exc:  # SummaryError is a ValueError
        raise StoreError(f"cannot read run directory {run_dir}: {exc}") from None
    _check_best(run_dir, status, headline_points(summary))
    return summary, status


def _check_best(run_dir: Path, status: dict[str, Any], points: list[dict[str, Any]]) -> None:
    try:
        check_best_recorded(run_dir, status, points)
    except RecordError as exc:
        raise StoreError(str(exc)) from None
