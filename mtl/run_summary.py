"""A run's summary file: what report tables need of one run, so they need not parse its whole trace.

The trainer rewrites it atomically after each validation and when the run ends: the best validation
point (by :func:`mtl.rundir.best_point`), the final one, the headline values of every validation point
(step, epoch, grader, IoU, SI-logRMSE: enough to redo the best rule and its notes), the model's size and
the state. It records the trace's size when written: a trace that has grown or shrunk since (a run
still training, a resume that truncated it) makes the summary stale, and readers go to the trace.
The trace stays the source of truth; the summary is derived from it and can always be rebuilt.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from mtl.io import atomic_write_text
from mtl.rundir import GRADER_KEY, RunDirectory, best_point, read_status

SUMMARY_FORMAT = 1
HEADLINE_KEYS = ("step", "epoch", GRADER_KEY, "val/iou", "val/si_logrmse")


class SummaryError(ValueError):
    """A summary file that does not hold what this module writes."""


def validation_points(trace: Path) -> list[dict[str, Any]]:
    """The trace's validation points (lines with ``val/grader``); a torn final line is ignored, as in
    :func:`mtl.rundir.read_jsonl`, and training lines are never parsed."""
    try:
        text = trace.read_text()
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]
    wanted = [line for line in complete if _GRADER_FIELD in line]
    points = []
    for line in wanted:
        try:
            points.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{trace}: a validation line is not valid JSON ({exc.msg})") from None
    if _GRADER_FIELD in tail:
        with contextlib.suppress(json.JSONDecodeError):  # a final line without newline is kept only if it parses
            points.append(json.loads(tail))
    return [p for p in points if isinstance(p, dict) and GRADER_KEY in p]


def build_summary(run: RunDirectory) -> dict[str, Any]:
    """The summary of ``run`` as its trace and status stand now."""
    try:
        trace_bytes = run.metrics.stat().st_size
    except FileNotFoundError:
        trace_bytes = 0
    points = validation_points(run.metrics)
    status = read_status(run.path)
    return {
        "format": SUMMARY_FORMAT,
        "trace_bytes": trace_bytes,
        "state": status.get("state"),
        "model": status.get("model"),
        "best": best_point(points, GRADER_KEY),
        "final": points[-1] if points else None,
        "validation": [{k: p.get(k) for k in HEADLINE_KEYS} for p in points],
    }


def write_run_summary(run: RunDirectory) -> dict[str, Any]:
    """Rewrite the run's summary file atomically from its trace and status; returns it."""
    summary = build_summary(run)
    atomic_write_text(run.summary_path, json.dumps(summary) + "\n")
    return summary


def read_run_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's summary when it is current (written by this format for the trace as it is now); None when
    there is none or the trace changed since. A damaged summary is a SummaryError naming the file."""
    run = RunDirectory(run_dir)
    try:
        text = run.summary_path.read_text()
    except FileNotFoundError:
        return None
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SummaryError(f"{run.summary_path}: not valid JSON ({exc.msg}); delete it to read the trace") from None
    if not isinstance(summary, dict) or summary.get("format") != SUMMARY_FORMAT:
        raise SummaryError(f"{run.summary_path}: not a run summary of format {SUMMARY_FORMAT}; "
                           "delete it to read the trace")
    validation = summary.get("validation")
    if not isinstance(validation, list) or not all(isinstance(p, dict) for p in validation):
        raise SummaryError(f"{run.summary_path}: 'validation' must be a list of points")
    try:
        trace_bytes = run.metrics.stat().st_size
    except FileNotFoundError:
        trace_bytes = 0
    return summary if summary.get("trace_bytes") == trace_bytes else None


_GRADER_FIELD = json.dumps(GRADER_KEY)
