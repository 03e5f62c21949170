"""Reading run directories back: the resolved config, the status and the metric trace.

``metrics.jsonl`` is the source of truth for every report. A run's result is the validation point
with the highest grader; all metrics are reported at that point, never each metric's own best.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

GRADER_KEY = "val/grader"
# libyaml's loader parses the same documents as SafeLoader about 25 times faster; it matters with
# thousands of runs. PyYAML built without libyaml still gives the same result.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass
class RunRecord:
    path: Path
    config: dict[str, Any]
    status: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.status.get("state", "unknown")

    @property
    def validation_points(self) -> list[dict[str, Any]]:
        return [p for p in self.points if GRADER_KEY in p]

    def best(self, key: str = GRADER_KEY) -> dict[str, Any] | None:
        return best_point(self.points, key)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def best_point(points: list[dict[str, Any]], key: str = GRADER_KEY) -> dict[str, Any] | None:
    """The point with the highest finite ``key``; ties go to the earliest step. None if no such point."""
    best = None
    for point in points:
        value = point.get(key)
        if not _finite(value):
            continue
        if best is None or value > best[key] or (value == best[key] and point.get("step", 0) < best.get("step", 0)):
            best = point
    return best


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSON-lines file; a torn final line (a write cut short) is ignored, a bad middle line is an error."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]
    points = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            points.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
    if tail.strip():
        try:  # a final line without newline is kept only if it parses
            points.append(json.loads(tail))
        except json.JSONDecodeError:
            pass
    return points


def read_run(path: str | Path) -> RunRecord:
    path = Path(path)
    config_path, status_path = path / "config.yaml", path / "status.json"
    config = yaml.load(config_path.read_text(), Loader=YAML_LOADER) if config_path.exists() else {}
    status = json.loads(status_path.read_text()) if status_path.exists() else {"state": "not started"}
    return RunRecord(path=path, config=config or {}, status=status, points=read_jsonl(path / "metrics.jsonl"))


def find_run_dirs(root: str | Path) -> Iterator[Path]:
    """Run directories (holding config.yaml) below ``root``, sorted; never descends into a run.

    Unlike a recursive glob this does not walk a run's predictions/ and checkpoints/ folders,
    which hold thousands of files per run on the real dataset.
    """
    root = Path(root)
    if (root / "config.yaml").is_file():
        yield root
        return
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if child.name != "wandb":
            yield from find_run_dirs(child)


def iter_runs(root: str | Path) -> Iterator[RunRecord]:
    """Every run directory below ``root``, in sorted order."""
    for run_dir in find_run_dirs(root):
        yield read_run(run_dir)
