"""Is anything in a run directory truncated, unreadable or lost? And does a run end as a reference run did?

``check_run_dir`` opens every file the run-directory contract names (docs/DESIGN.md §4.1) the way its
readers do: status.json and config.yaml parse (the config through the schema), metrics.jsonl through
``mtl.run.trace``, checkpoints through ``torch.load``, zips with every member's CRC checked,
prediction PNGs decoded. W&B's own files under ``wandb/`` are W&B's to keep consistent and are not
opened. A hidden ``.<name>.<random>.tmp`` is a write a kill cut short: it is not a run file (readers
never see it), so it is reported apart, and a restarted run must clear it away.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from PIL import Image

from mtl.config import make_config
from mtl.run.layout import ENVIRONMENT_FILE, SUMMARY_FILE
from mtl.run.records import read_environment, read_record, read_status
from mtl.run.summary import read_run_summary
from mtl.run.trace import read_trace

TOP_LEVEL_FILES = {"status.json", "config.yaml", "metrics.jsonl", SUMMARY_FILE, "source.zip", "submission.zip",
                   ".lock"}
CHECKPOINT_KEYS = {"last.pt": ("model", "optimizer", "scheduler", "rng", "epoch", "batch_in_epoch", "step"),
                   "best.pt": ("model", "best")}


@dataclass
class DirCheck:
    files_checked: int = 0
    problems: list[str] = field(default_factory=list)
    temporaries: list[Path] = field(default_factory=list)

    def __iadd__(self, other: DirCheck) -> DirCheck:
        self.files_checked += other.files_checked
        self.problems += other.problems
        self.temporaries += other.temporaries
        return self


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _check_checkpoint(path: Path) -> list[str]:
    state = torch.load(path, map_location="cpu", weights_only=False)
    missing = [key for key in CHECKPOINT_KEYS[path.name] if key not in state]
    return [f"{path}: checkpoint lacks {missing}"] if missing else []


def _check_zip(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
        if bad is not None:
            return [f"{path}: member {bad} fails its CRC check"]
        problems = []
        for name in archive.namelist():
            if name.endswith(".zip"):
                with zipfile.ZipFile(archive.open(name)) as inner:
                    if inner.testzip() is not None:
                        problems.append(f"{path}: nested {name} has a corrupt member")
        return problems


def _check_file(path: Path, run_dir: Path) -> list[str]:
    relative = path.relative_to(run_dir)
    top = relative.parts[0]
    if path.name == "status.json" and len(relative.parts) == 1:
        read_status(run_dir)  # through the model: a damaged or incomplete status raises, naming the field
        return []
    if path.name == "config.yaml" and len(relative.parts) == 1:
        make_config(yaml.safe_load(path.read_text()), source=str(path))
        return []
    if path.name == "metrics.jsonl" and len(relative.parts) == 1:
        points = read_trace(path)
        return [f"{path}: a point without 'step'" for p in points if "step" not in p][:1]
    if path.name == SUMMARY_FILE and len(relative.parts) == 1:
        read_run_summary(run_dir)  # a damaged one raises; a stale one (the trace moved on) is allowed
        return []
    if top == "checkpoints" and path.name in CHECKPOINT_KEYS:
        return _check_checkpoint(path)
    if path.suffix == ".zip" and len(relative.parts) == 1:
        return _check_zip(path)
    if top == "predictions" and path.suffix == ".png" and relative.parts[1] in ("semseg", "depth"):
        with Image.open(path) as image:
            image.load()
        return []
    if path.name == ENVIRONMENT_FILE and len(relative.parts) == 1:
        read_environment(run_dir)  # through the model: a damaged one raises, naming the file
        return []
    if path.name == ".lock" and len(relative.parts) == 1:
        return []
    return [f"{path}: not a file the run-directory contract names"]


def check_run_dir(run_dir: Path) -> DirCheck:
    """Open every run file as its reader would; any failure is a problem naming the file."""
    result = DirCheck()
    if not run_dir.exists():
        return result
    for path in sorted(p for p in run_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(run_dir)
        if relative.parts[0] == "wandb":
            continue
        if is_temporary(path):
            result.temporaries.append(path)
            continue
        result.files_checked += 1
        try:
            result.problems += _check_file(path, run_dir)
        except Exception as exc:  # noqa: BLE001 - any failure to read the file is what we look for
            result.problems.append(f"{path}: unreadable: {type(exc).__name__}: {exc}")
    return result


# ------------------------------------------------------------------------------------ run comparison
def _without_time(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in p.items() if k != "time"} for p in points]


def _model_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def weight_differences(path: Path, reference: Path) -> list[str]:
    ours, theirs = _model_weights(path), _model_weights(reference)
    if ours.keys() != theirs.keys():
        return [f"{path}: parameter names differ from {reference}"]
    return [f"{path}: {key} differs bitwise from {reference}" for key in theirs
            if not torch.equal(ours[key], theirs[key])][:3]


def run_differences(run_dir: Path, reference_dir: Path) -> list[str]:
    """How a finished run differs from a reference run of the same config (nothing, when resume is exact):
    state, best point (grader and step), the whole metric trace except wall time, and the final and
    best weights bit for bit."""
    ours, theirs = read_record(run_dir), read_record(reference_dir)
    problems = []
    if ours.state != "finished":
        problems.append(f"{run_dir}: state {ours.state!r}, expected 'finished' "
                        f"({ours.status.error if ours.status else 'no status'})")
        return problems
    best, reference_best = ours.best(), theirs.best()
    for key in ("step", "val/grader"):
        if (best or {}).get(key) != (reference_best or {}).get(key):
            problems.append(f"{run_dir}: best {key} {(best or {}).get(key)} != reference "
                            f"{(reference_best or {}).get(key)}")
    trace, reference_trace = read_trace(run_dir / "metrics.jsonl"), read_trace(reference_dir / "metrics.jsonl")
    if _without_time(trace) != _without_time(reference_trace):
        steps = [p.get("step") for p in trace]
        problems.append(f"{run_dir}: metric trace differs from the reference (steps {steps} vs "
                        f"{[p.get('step') for p in reference_trace]})")
    for name in ("best.pt",):  # a finished run keeps best.pt only; the identical traces cover the rest
        problems += weight_differences(run_dir / "checkpoints" / name, reference_dir / "checkpoints" / name)
    return problems
