"""Reading a run's records back, validated: the one reader that report, planner, status and export share.

A damaged line or file is named the same way everywhere ("<path>: line 7 is not valid JSON") and never
silently changes a result; only a torn final line of the trace (a write cut short by a kill) is ignored.
A recorded best point must be one of the trace's validation points: if the status says otherwise, the
records disagree and the reader says so rather than picking one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mtl.best import GRADER_KEY
from mtl.rundir import CONFIG_FILE, METRICS_FILE, STATUS_FILE, RunRecord, State, read_config, read_jsonl


class RecordError(ValueError):
    """A run's records are damaged or disagree; the message names the file (and line)."""


def read_points(path: Path) -> list[dict[str, Any]]:
    """The trace's points; RecordError naming the file and line for a damaged line (a torn last line is
    ignored) or a line that is not a JSON object."""
    try:
        points = read_jsonl(Path(path))
    except ValueError as exc:
        raise RecordError(str(exc)) from None
    except OSError as exc:
        raise RecordError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    for number, point in enumerate(points, start=1):
        if not isinstance(point, dict):
            raise RecordError(f"{path}: line {number} is not a JSON object (got {type(point).__name__})")
    return points


def read_status_checked(run_dir: Path) -> dict[str, Any]:
    """The run's status, ``{"state": "not started"}`` without one; RecordError naming the file when it is
    empty, not JSON, or not an object (the status is written atomically, so that is damage)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {"state": State.NOT_STARTED}
    except OSError as exc:
        raise RecordError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not text.strip():
        raise RecordError(f"{path}: is empty (damaged; `mtl-ablate repair` rebuilds it from the checkpoints)")
    try:
        status = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: is not valid JSON ({exc.msg} at line {exc.lineno}); damaged, "
                          "`mtl-ablate repair` rebuilds it from the checkpoints") from None
    if not isinstance(status, dict):
        raise RecordError(f"{path}: expected a JSON object, got {type(status).__name__}")
    return status


def check_best_recorded(run_dir: Path, status: dict[str, Any], points: list[dict[str, Any]]) -> None:
    """A best point in the status must be a validation point of the trace with the same grader."""
    best = status.get("best")
    if not isinstance(best, dict):
        return
    step, grader = best.get("step"), best.get("grader")
    if any(p.get("step") == step and p.get(GRADER_KEY) == grader for p in points):
        return
    raise RecordError(f"{Path(run_dir) / METRICS_FILE}: holds no validation point at step {step} with grader "
                      f"{grader}, the best point recorded in {Path(run_dir) / STATUS_FILE}; the records disagree "
                      "(a damaged or replaced trace)")


def read_record(run_dir: Path) -> RunRecord:
    """A run's config, status and trace, validated (RecordError naming the damaged file and line); the
    status's best point must be one of the trace's validation points."""
    run_dir = Path(run_dir)
    status = read_status_checked(run_dir)
    points = read_points(run_dir / METRICS_FILE)
    check_best_recorded(run_dir, status, points)
    try:
        config = read_config(run_dir) if (run_dir / CONFIG_FILE).exists() else {}
    except yaml.YAMLError as exc:
        raise RecordError(f"{run_dir / CONFIG_FILE}: is not valid YAML ({exc})") from None
    return RunRecord(path=run_dir, config=config if isinstance(config, dict) else {}, status=status, points=points)


_GRADER_FIELD = json.dumps(GRADER_KEY)


def validation_points_of(text: str, path: Path) -> list[dict[str, Any]]:
    """The validation points of a trace's ``text``, parsing only the lines that carry the grader in one go
    (what reports need, fast), with every other line shape-checked: RecordError naming the line for any
    damaged one but a torn final line (a write cut short, ignored)."""
    lines = text.split("\n")
    if lines and lines[-1].strip():
        try:  # a final line without newline is kept only if it parses (a write cut short otherwise)
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped and not (stripped[0] == "{" and stripped[-1] == "}"):
            raise RecordError(f"{path}: line {number} is not valid JSON (a damaged or cut line)")
    wanted = [line for line in lines if _GRADER_FIELD in line]
    try:  # one parse for all lines; on failure find the bad line for the message
        parsed = json.loads("[" + ",".join(wanted) + "]")
    except json.JSONDecodeError:
        for number, line in enumerate(lines, start=1):
            if _GRADER_FIELD in line:
                try:
                    json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RecordError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
        raise RecordError(f"{path}: metric lines are not valid JSON objects") from None
    if not all(isinstance(point, dict) for point in parsed):
        raise RecordError(f"{path}: every metrics line must be a JSON object")
    return [point for point in parsed if GRADER_KEY in point]
