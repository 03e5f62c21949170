"""A run's summary file: what report tables need of one run, so they need not parse its whole trace.

The trainer rewrites it atomically after each validation and when the run ends: the best validation
line (by :func:`mtl.run.best.best_point`, ranked as the run's tasks rank it), the final one, the headline
of every validation point (step, epoch, grader, IoU, SI-logRMSE: enough to redo the best rule and its
notes; NaN where a single-task run has no such metric), the model's size and the
state, and the run's config as parsed from config.yaml (parsing YAML is most of what reading a run costs).
It records the trace's size and config.yaml's size and modification time when written: a trace that has
grown or shrunk since (a run still training, a resume that truncated it) or an edited config makes the
summary stale, and readers go to the run's own files. The trace stays the source of truth; the summary is
derived from it and can always be rebuilt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from mtl.run.best import best_point, run_rank_metric
from mtl.run.errors import RecordError
from mtl.run.io import atomic_write_text
from mtl.run.layout import RunDirectory
from mtl.run.model import ModelSize, RunState, ValidationPoint
from mtl.run.records import model_error, read_config, read_status
from mtl.run.trace import Line, read_validation_lines

SUMMARY_FORMAT = 3


class Headlines(BaseModel):
    """Every validation point's headline, column by column (parses several times faster than a list of objects)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: list[int]
    epoch: list[int]
    grader: list[float]
    iou: list[float]
    si_logrmse: list[float]

    @model_validator(mode="after")
    def _equal_lengths(self) -> Headlines:
        if len({len(self.step), len(self.epoch), len(self.grader), len(self.iou), len(self.si_logrmse)}) != 1:
            raise ValueError("every column must hold one value per validation point")
        return self

    @classmethod
    def of(cls, points: list[ValidationPoint]) -> Headlines:
        return cls(step=[p.step for p in points], epoch=[p.epoch for p in points],
                   grader=[p.grader for p in points], iou=[p.iou for p in points],
                   si_logrmse=[p.si_logrmse for p in points])

    def points(self) -> list[ValidationPoint]:
        return [ValidationPoint(step=s, epoch=e, grader=g, iou=i, si_logrmse=si)
                for s, e, g, i, si in zip(self.step, self.epoch, self.grader, self.iou, self.si_logrmse)]


class Summary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[3]
    trace_bytes: int
    config_file: Optional[tuple[int, int]]  # config.yaml's size and mtime (ns) when written
    config: Optional[dict[str, Any]]
    state: Optional[RunState]
    model: Optional[ModelSize]
    best: Optional[Line]  # the best validation line, whole
    final: Optional[Line]  # the last validation line, whole
    validation: Headlines


def _sources(run: RunDirectory) -> dict[str, Any]:
    """What the summary was built from, to tell whether it is still current."""
    try:
        trace_bytes = run.metrics.stat().st_size
    except FileNotFoundError:
        trace_bytes = 0
    try:
        stat = run.config_path.stat()
        config: Optional[tuple[int, int]] = (stat.st_size, stat.st_mtime_ns)
    except FileNotFoundError:
        config = None
    return {"trace_bytes": trace_bytes, "config_file": config}


def build_summary(run: RunDirectory) -> Summary:
    """The summary of ``run`` as its trace, config and status stand now."""
    sources = _sources(run)
    lines = read_validation_lines(run.metrics)
    status = read_status(run.path)
    config = read_config(run.path) if sources["config_file"] is not None else None
    return Summary(
        format=SUMMARY_FORMAT, **sources, config=config,
        state=status.state if status else None, model=status.model if status else None,
        best=best_point(lines, *run_rank_metric((config or {}).get("tasks"))), final=lines[-1] if lines else None,
        validation=Headlines.of([ValidationPoint.of(line) for line in lines]))


def write_run_summary(run: RunDirectory) -> Summary:
    """Rewrite the run's summary file atomically from its trace and status; returns it."""
    summary = build_summary(run)
    atomic_write_text(run.summary_path, json.dumps(summary.model_dump(mode="json")) + "\n")
    return summary


def read_run_summary(run_dir: str | Path) -> Optional[Summary]:
    """The run's summary when it is current (written in this format for the trace and config as they are
    now); None when there is none, it has another format, or the trace or config changed since. A damaged
    summary is a RecordError naming the file."""
    run = RunDirectory(run_dir)
    try:
        text = run.summary_path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{run.summary_path}: not valid JSON ({exc.msg}); delete it to read the trace") from None
    if not isinstance(data, dict):
        raise RecordError(f"{run.summary_path}: expected a JSON object; delete it to read the trace")
    if data.get("format") != SUMMARY_FORMAT:
        return None  # written by other code: the run's own files are read, and the trainer rewrites it
    try:
        summary = Summary.model_validate(data)
    except ValidationError as exc:
        raise model_error(run.summary_path, exc) from None
    sources = _sources(run)
    current = summary.trace_bytes == sources["trace_bytes"] and summary.config_file == sources["config_file"]
    return summary if current else None
