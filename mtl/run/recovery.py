"""Reopening a run directory: what its records allow (resume, rebuild, refuse) before anything is written.

A run with a recorded best point is never trained again by accident. Checkpoints are written last.pt
first, then best.pt, then the status, so whatever instant a kill lands, what remains tells what to do:

- training done (the trace holds the last epoch's validation point) but last.pt, the status or
  submission.zip gone: rebuild them from best.pt and the trace, train nothing;
- best.pt behind last.pt (a kill between the two writes): rewrite best.pt from last.pt, whose model is
  the one validated at that step;
- a best point recorded but last.pt gone before training was done, or best.pt gone: refuse, naming the
  file (only a fresh start could continue, and that is the user's call).
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from mtl.run.errors import RecordError, RunRefused
from mtl.run.io import atomic_torch_save
from mtl.run.layout import RunDirectory
from mtl.run.model import ValidationPoint
from mtl.run.records import check_best_in_trace, read_status, steps_and_graders
from mtl.run.trace import Line, read_validation_lines

DATASET_SPLITS = ("train", "val", "test")
RETRAIN_HINT = "delete the run directory (or `mtl-ablate run --force`) to train it again from scratch"


def say(message: str) -> None:
    """A step taken on the run's records (rebuilding a file), on stderr beside the run's other lines."""
    print(f"mtl-train: {message}", file=sys.stderr, flush=True)


def dataset_fingerprint(root: Path) -> str:
    """A cheap identity of a dataset folder's contents: every file's path and size under its splits.

    Stat only, never read: MiniScapes holds 75,000 files. Files beside the splits (statistics, markers)
    are left out, so a cache written into the root does not change the dataset's identity."""
    digest = hashlib.sha256()
    root = Path(root)
    for split in DATASET_SPLITS:
        for dirpath, dirnames, filenames in os.walk(root / split):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                digest.update(f"{os.path.relpath(path, root)}\0{os.stat(path).st_size}\n".encode())
    return digest.hexdigest()[:16]


def check_same_dataset(recorded: Optional[str], current: str, root: Path, source: Path) -> None:
    if recorded is not None and recorded != current:
        raise RunRefused(
            f"the dataset at {root} changed since this run started (fingerprint {recorded} recorded in "
            f"{source}, now {current}: files added, removed or resized); refusing to resume it on other data. "
            f"Restore the dataset, or {RETRAIN_HINT}.")


def best_of_checkpoint(state: dict[str, Any]) -> Optional[ValidationPoint]:
    """The best point a checkpoint holds (checkpoints keep it as a plain dict: no pickled classes)."""
    best = state.get("best")
    return ValidationPoint.model_validate(best) if best is not None else None


@dataclass(frozen=True)
class LastCheckpoint:
    """last.pt's position (no tensors kept)."""

    epoch: int
    step: int
    best: Optional[ValidationPoint]
    dataset: Optional[str]


@dataclass(frozen=True)
class Records:
    """What a run directory's checkpoints and trace say, read before the run is touched."""

    last: Optional[LastCheckpoint]
    best: Optional[ValidationPoint]  # best.pt's best point
    final_point: Optional[Line]  # the trace's validation line of the last epoch, if reached

    @property
    def recorded_best(self) -> Optional[ValidationPoint]:
        return (self.last.best if self.last else None) or self.best


def _load(path: Path) -> dict[str, Any]:
    import torch  # (here: the run package loads no torch until a checkpoint is read)

    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
        return state
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file; name the file
        raise RunRefused(f"{path}: cannot be read as a checkpoint ({type(exc).__name__}: {exc}); "
                         f"it cannot be rebuilt here: {RETRAIN_HINT}") from None


def inspect(run: RunDirectory, num_epochs: int, say: Callable[[str], None]) -> Records:
    """Read the records and repair what a kill between two checkpoint writes left behind; RunRefused for
    what cannot be repaired (the message names the file)."""
    last_state = _load(run.last) if run.last.exists() else None
    last = (LastCheckpoint(epoch=last_state["epoch"], step=last_state["step"], best=best_of_checkpoint(last_state),
                           dataset=last_state.get("dataset")) if last_state is not None else None)
    best = best_of_checkpoint(_load(run.best)) if run.best.exists() else None
    try:
        validation = read_validation_lines(run.metrics)
    except RecordError as exc:  # refused, not failed: a damaged trace must not flip a finished run's state
        raise RunRefused(f"{exc}; the trace cannot be trusted to rebuild or resume from: {RETRAIN_HINT}") from None
    final = next((p for p in reversed(validation) if p.get("epoch") == num_epochs), None)
    if last is not None and last.best is not None and last.best != best:
        if last.best.step != last.step:
            if best is None:
                raise RunRefused(f"{run.best} is missing: the run recorded its best point at step "
                                 f"{last.best.step} in {run.last}; it cannot be rebuilt: {RETRAIN_HINT}")
            raise RunRefused(f"{run.best} does not hold the best point recorded in {run.last} "
                             f"(step {last.best.step}); it cannot be rebuilt: {RETRAIN_HINT}")
        # Killed between the two writes: last.pt's model is the one validated at its step.
        say(f"rebuilding {run.best.relative_to(run.path)} from {run.last.relative_to(run.path)} "
            f"(best point at step {last.step})")
        assert last_state is not None
        atomic_torch_save({"model": last_state["model"], "config": last_state["config"],
                           "best": last.best.model_dump()}, run.best)
        best = last.best
    records = Records(last=last, best=best, final_point=final)
    if last is None and best is not None and final is None:
        raise RunRefused(f"{run.last} is missing: the run recorded a best point (step {best.step}, "
                         f"{run.best}) but not its last epoch, and cannot resume without its last "
                         f"checkpoint; {RETRAIN_HINT}")
    recorded = records.recorded_best or _status_best(run)
    if recorded and best is None:
        raise RunRefused(f"{run.best} is missing: the run recorded its best point at step "
                         f"{recorded.step} ({run.last if last else run.status_path}); it cannot be "
                         f"rebuilt: {RETRAIN_HINT}")
    if last is None and best is None and final is not None:
        raise RunRefused(f"{run.best} and {run.last} are missing but {run.metrics} records every epoch; "
                         f"the model cannot be rebuilt: {RETRAIN_HINT}")
    return records


def _status_best(run: RunDirectory) -> Optional[ValidationPoint]:
    """The status's best point; None when it has none or is damaged (the trainer rewrites a damaged one)."""
    try:
        status = read_status(run.path)
    except RecordError:
        return None
    return status.best if status else None


def training_done(records: Records) -> bool:
    """The last epoch was validated and checkpointed: only prediction and status can be missing."""
    return records.final_point is not None and records.best is not None and (
        records.last is None or records.last.step >= records.final_point["step"])


def check_best_in_trace_or_refuse(run: RunDirectory, best: ValidationPoint) -> None:
    """best.pt's point must be a validation point of the trace with the same grader."""
    try:
        check_best_in_trace(run.path, best, steps_and_graders(read_validation_lines(run.metrics)), source=run.best)
    except RecordError as exc:
        raise RunRefused(f"{exc}; {RETRAIN_HINT}") from None
