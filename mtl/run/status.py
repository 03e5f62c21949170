"""The one writer of ``status.json``: each change of state is a method, every write is checked against the
model (:class:`mtl.run.model.Status`) and atomic.

Only the process that holds the run's lock writes its status (the trainer; ``mtl-train`` after its trainer
failed). A status that does not parse is rewritten from what the writer knows: the file is the owner's.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Optional

from pydantic import ValidationError

from mtl.run.errors import RecordError
from mtl.run.io import atomic_write_text
from mtl.run.layout import RunDirectory
from mtl.run.model import ModelSize, Progress, RunState, Status, ValidationPoint
from mtl.run.records import model_error, read_status


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class StatusWriter:
    """Writes one run's status; :attr:`status` is the last one written (or read when it was opened)."""

    def __init__(self, run: RunDirectory):
        self.run = run
        try:
            self.status: Optional[Status] = read_status(run.path)
        except RecordError:
            self.status = None  # damaged: what follows rewrites it whole

    def record(self, **changes: Any) -> Status:
        """Write the status with ``changes`` (fields of :class:`Status`, checked against the model)."""
        unknown = sorted(set(changes) - set(Status.model_fields))
        if unknown:
            raise TypeError(f"not fields of a run's status: {', '.join(unknown)}")
        data = self.status.model_dump() if self.status is not None else {}
        data.update(changes, updated_at=now_iso())
        try:
            status = Status.model_validate(data)
        except ValidationError as exc:  # a bug of the writer's caller: say which field
            raise model_error(self.run.status_path, exc) from None
        atomic_write_text(self.run.status_path, json.dumps(status.model_dump(mode="json"), indent=2) + "\n")
        self.status = status
        return status

    # -------------------------------------------------------------------------------------- transitions
    def running(self, *, num_epochs: int, config_hash: str, code_version: str, dataset: str, pid: int, host: str,
                epoch: int, step: int, best: Optional[ValidationPoint]) -> Status:
        """An attempt starts: keeps what earlier attempts recorded (start, elapsed time, model size); an
        earlier attempt's speed, ETA and resume point say nothing about this one."""
        previous = self.status
        return self.record(
            state=RunState.RUNNING, error=None, traceback=None, num_epochs=num_epochs, config_hash=config_hash,
            code_version=code_version, dataset=dataset, pid=pid, host=host, epoch=epoch, step=step, best=best,
            started_at=(previous.started_at if previous else None) or now_iso(), finished_at=None,
            elapsed_s=(previous.elapsed_s if previous else None) or 0.0, eta_s=None, progress=None, resumed=None,
            pruned=None, model=previous.model if previous else None, submission=None)

    def progressed(self, progress: Progress) -> Status:
        return self.record(progress=progress, eta_s=progress.eta_s)

    def validated(self, *, epoch: int, step: int, best: Optional[ValidationPoint], elapsed_s: float,
                  eta_s: Optional[float], progress: Optional[Progress]) -> Status:
        return self.record(epoch=epoch, step=step, best=best, elapsed_s=round(elapsed_s, 3), eta_s=eta_s,
                           progress=progress)

    def finished(self, *, epoch: int, step: int, best: Optional[ValidationPoint], **bookkeeping: Any) -> Status:
        """Training done and the submission packed. ``bookkeeping``: what a rebuilt status restores."""
        return self.record(state=RunState.FINISHED, error=None, traceback=None, epoch=epoch, step=step, best=best,
                           eta_s=0.0, finished_at=bookkeeping.pop("finished_at", None) or now_iso(), **bookkeeping)

    def interrupted(self, *, error: str, epoch: int, step: int, best: Optional[ValidationPoint]) -> Status:
        return self.record(state=RunState.INTERRUPTED, error=error, epoch=epoch, step=step, best=best)

    def diverged(self, *, error: str, diverged_step: int, checkpoint_step: Optional[int]) -> Status:
        return self.record(state=RunState.DIVERGED, error=error, diverged_step=diverged_step,
                           checkpoint_step=checkpoint_step)

    def failed(self, *, error: str, traceback: Optional[str]) -> Status:
        return self.record(state=RunState.FAILED, error=error, traceback=traceback)

    def skipped(self, *, error: str) -> Status:
        return self.record(state=RunState.SKIPPED, error=error)

    def paused(self, *, epoch: int, step: int, best: Optional[ValidationPoint]) -> Status:
        """Stopped after the epoch it was asked to stop after (a racing rung); last.pt kept to continue."""
        return self.record(state=RunState.PAUSED, error=None, epoch=epoch, step=step, best=best, eta_s=None)

    def pruned(self, *, reason: str) -> Status:
        """Left behind by its entry's race (written by the suite, holding the run's lock): still paused, with
        its checkpoint; a later decision that needs it continues it."""
        return self.record(state=RunState.PRUNED, pruned=reason)

    def sized(self, model: ModelSize) -> Status:
        return self.record(model=model)
