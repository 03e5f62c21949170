"""The run's JSON-lines files (``metrics.jsonl``, ``slurm-jobs.jsonl``): their one parser and the trace's writer.

A line is appended whole or cut short by a kill, so only the final line may be torn: a final line without
its newline is kept when it parses and dropped otherwise. Any other line that is not a JSON object is
damage, a :class:`~mtl.run.errors.RecordError` naming the file and the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from mtl.run.errors import RecordError
from mtl.run.io import append_line, atomic_write_text, fsync_file
from mtl.run.model import GRADER_KEY

Line = dict[str, Any]
_GRADER_FIELD = json.dumps(GRADER_KEY)


def parse_lines(text: str, path: Path, marker: Optional[str] = None) -> list[Line]:
    """The JSON objects of ``text`` (a file at ``path``); with ``marker``, only the lines that contain it,
    parsed in one go, every other line shape-checked only (what reports need of a long trace, fast)."""
    lines = text.split("\n")
    if lines and lines[-1].strip():
        try:  # a final line without newline is kept only if it parses (a write cut short otherwise)
            json.loads(lines[-1])
        except json.JSONDecodeError:
            lines.pop()
    wanted = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not (stripped[0] == "{" and stripped[-1] == "}"):
            raise RecordError(f"{path}: line {number} is not valid JSON (a damaged or cut line)")
        if marker is None or marker in line:
            wanted.append((number, line))
    try:  # one parse for all lines; on failure find the bad line for the message
        parsed: list[Line] = json.loads("[" + ",".join(line for _, line in wanted) + "]")
    except json.JSONDecodeError:
        for number, line in wanted:
            try:
                json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
        raise RecordError(f"{path}: lines are not valid JSON objects") from None
    for (number, _), value in zip(wanted, parsed):
        if not isinstance(value, dict):
            raise RecordError(f"{path}: line {number} is not a JSON object (got {type(value).__name__})")
    return parsed


def read_lines(path: Path, marker: Optional[str] = None) -> list[Line]:
    """:func:`parse_lines` of the file at ``path``; [] when it does not exist, RecordError when unreadable."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    return parse_lines(text, Path(path), marker)


def read_trace(path: Path) -> list[Line]:
    """Every point of a trace (training and validation lines)."""
    return read_lines(path)


def read_validation_lines(path: Path) -> list[Line]:
    """The trace's validation lines (those with ``val/grader``), training lines only shape-checked."""
    return [line for line in read_lines(path, _GRADER_FIELD) if GRADER_KEY in line]


def is_validation(line: Line) -> bool:
    return GRADER_KEY in line


class LocalTrace:
    """The run's append-only metric lines (``RunDirectory.metrics``), the source of truth W&B mirrors.

    Points are plain appends; :meth:`sync` makes them durable right before each checkpoint and at the end.
    Points after the last checkpoint need no fsync: resume truncates them and trains them again."""

    def __init__(self, path: Path):
        self.path = path

    def log(self, point: Line) -> None:
        append_line(self.path, json.dumps(point))  # NaN/Infinity as json writes them: the parser and pandas accept them

    def sync(self) -> None:
        fsync_file(self.path)

    def truncate_after(self, step: int) -> None:
        """On resume: drop points logged after the checkpoint; training re-creates them."""
        if not self.path.exists():
            return
        kept = [p for p in read_trace(self.path) if p.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(p) + "\n" for p in kept))
