"""Reading what a report needs from a run directory's own files (config, status, validation lines of
the trace, the summary file), each failure a :class:`StoreError` naming the run or file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mtl.run_summary import read_run_summary
from mtl.rundir import GRADER_KEY, RunDirectory, read_config, read_status_strict


class StoreError(RuntimeError):
    """A result store cannot be read; the message says which store and why."""


def read_run_for_report(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(config, status, validation points) of a run directory: what :func:`mtl.rundir.read_run` reads,
    parsing only the metric lines that carry ``val/grader`` (training points are never reported).

    As in ``read_jsonl``, a torn final line is ignored and a bad earlier validation line is an error.
    """
    config, status = config_and_status(run_dir)
    return config, status, read_validation_points(run_dir)


def read_validation_points(run_dir: Path) -> list[dict[str, Any]]:
    """The validation points of the run's trace (see :func:`read_run_for_report`)."""
    metrics_path = RunDirectory(run_dir).metrics
    try:
        text = metrics_path.read_text() if metrics_path.exists() else ""
    except OSError as exc:
        raise StoreError(f"cannot read run directory {run_dir}: {exc}") from None
    return _validation_points(text, metrics_path)


def config_and_status(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    config_path = RunDirectory(run_dir).config_path
    try:
        config = read_config(run_dir) or {}
        status = read_status_strict(run_dir)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise StoreError(f"cannot read run directory {run_dir}: {exc}") from None
    if not isinstance(config, dict):
        raise StoreError(f"{config_path}: expected a mapping of config keys, got {type(config).__name__}")
    return config, status


def read_current_summary(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(summary, status) of the run when its summary file is current (:func:`mtl.run_summary.read_run_summary`),
    else None."""
    try:
        summary = read_run_summary(run_dir)
        if summary is None:
            return None
        return summary, read_status_strict(run_dir)
    except (OSError, ValueError) as exc:  # SummaryError is a ValueError, as is a damaged status
        raise StoreError(f"cannot read run directory {run_dir}: {exc}") from None


def _validation_points(text: str, path: Path) -> list[dict[str, Any]]:
    lines = text.split("\n")
    if lines and lines[-1].strip():
        try:  # a final line without newline is kept only if it parses (a write cut short otherwise)
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    wanted = [line for line in lines if _GRADER_FIELD in line]
    try:  # one parse for all lines; on failure find the bad line for the message
        parsed = json.loads("[" + ",".join(wanted) + "]")
    except json.JSONDecodeError:
        for number, line in enumerate(lines, start=1):
            if _GRADER_FIELD in line:
                try:
                    json.loads(line)
                except json.JSONDecodeError as exc:
                    raise StoreError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
        raise StoreError(f"{path}: metric lines are not valid JSON objects") from None
    if not all(isinstance(point, dict) for point in parsed):
        raise StoreError(f"{path}: every metrics line must be a JSON object")
    return [point for point in parsed if GRADER_KEY in point]


_GRADER_FIELD = json.dumps(GRADER_KEY)
