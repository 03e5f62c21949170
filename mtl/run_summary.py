"""A run's summary file: what report tables need of one run, so they need not parse its whole trace.

The trainer rewrites it atomically after each validation and when the run ends: the best validation
point (by :func:`mtl.best.best_point`), the final one, the headline values of every validation point
(step, epoch, grader, IoU, SI-logRMSE: enough to redo the best rule and its notes), the model's size and
the state, and the run's config as parsed from config.yaml (parsing YAML is most of what reading a run
costs). It records the trace's size and config.yaml's size and modification time when written: a trace
that has grown or shrunk since (a run still training, a resume that truncated it) or an edited config
makes the summary stale, and readers go to the run's own files.
The trace stays the source of truth; the summary is derived from it and can always be rebuilt.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from mtl.best import GRADER_KEY, best_point
from mtl.io import atomic_write_text
from mtl.rundir import RunDirectory, read_config, read_status

SUMMARY_FORMAT = 2
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


def _sources(run: RunDirectory) -> dict[str, Any]:
    """What the summary was built from, to tell whether it is still current."""
    try:
        trace_bytes = run.metrics.stat().st_size
    except FileNotFoundError:
        trace_bytes = 0
    try:
        stat = run.config_path.stat()
        config = [stat.st_size, stat.st_mtime_ns]
    except FileNotFoundError:
        config = None
    return {"trace_bytes": trace_bytes, "config_file": config}


def build_summary(run: RunDirectory) -> dict[str, Any]:
    """The summary of ``run`` as its trace, config and status stand now."""
    sources = _sources(run)
    points = validation_points(run.metrics)
    status = read_status(run.path)
    return {
        "format": SUMMARY_FORMAT,
        **sources,
        "config": read_config(run.path) if sources["config_file"] is not None else None,
        "state": status.get("state"),
        "model": status.get("model"),
        "best": best_point(points, GRADER_KEY),
        "final": points[-1] if points else None,
        # Column by column (one list per key): parses several times faster than a list of objects.
        "validation": {k: [p.get(k) for p in points] for k in HEADLINE_KEYS},
    }


def write_run_summary(run: RunDirectory) -> dict[str, Any]:
    """Rewrite the run's summary file atomically from its trace and status; returns it."""
    summary = build_summary(run)
    atomic_write_text(run.summary_path, json.dumps(summary) + "\n")
    return summary


def headline_points(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary's validation points (their headline keys only), in trace order."""
    columns = summary["validation"]
    return [dict(zip(HEADLINE_KEYS, values)) for values in zip(*(columns[k] for k in HEADLINE_KEYS))]


def read_run_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's summary when it is current (written in this format for the trace and config as they are
    now); None when there is none, it has another format, or the trace or config changed since. A
    damaged summary is a SummaryError naming the file."""
    run = RunDirectory(run_dir)
    try:
        text = run.summary_path.read_text()
    except FileNotFoundError:
        return None
    try:
        summary = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SummaryError(f"{run.summary_path}: not valid JSON ({exc.msg}); delete it to read the trace") from None
    if not isinstance(summary, dict):
        raise SummaryError(f"{run.summary_path}: expected a JSON object; delete it to read the trace")
    if summary.get("format") != SUMMARY_FORMAT:
        return None  # written by other code: the run's own files are read, and the trainer rewrites it
    validation = summary.get("validation")
    if not isinstance(validation, dict) or set(validation) != set(HEADLINE_KEYS) \
            or not all(isinstance(v, list) for v in validation.values()) \
            or len({len(v) for v in validation.values()}) != 1:
        raise SummaryError(f"{run.summary_path}: 'validation' must hold one equally long list per key of "
                           f"{list(HEADLINE_KEYS)}")
    if not isinstance(summary.get("config"), dict):
        raise SummaryError(f"{run.summary_path}: 'config' must be the run's config mapping")
    sources = _sources(run)
    current = all(summary.get(key) == value for key, value in sources.items())
    return summary if current else None


_GRADER_FIELD = json.dumps(GRADER_KEY)
