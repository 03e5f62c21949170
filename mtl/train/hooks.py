"""What the training loop records, one hook each: the trace, W&B, progress, periodic checkpoints, best.pt,
the status and the summary.

:func:`default_hooks` puts them in the order they must run; at the end of an epoch the loop has written
last.pt already, and then best.pt (on a better point) comes before the status and the summary that name it.
"""

from __future__ import annotations

import math
from typing import Any

from torch.utils.data import DataLoader

from mtl.run import io as atomic
from mtl.run.model import HEADLINE_LABELS
from mtl.run.status import StatusWriter
from mtl.run.summary import write_run_summary
from mtl.train.loop import Hook, Trainer
from mtl.train.tracking import Progress, WandbSink
from mtl.train.visualize import validation_panels


class TraceHook(Hook):
    """Every point into the run's trace, the source of truth."""

    def after_train_point(self, trainer: Trainer, point: dict[str, Any]) -> None:
        trainer.trace.log(point)

    def after_validation_point(self, trainer: Trainer, point: dict[str, Any]) -> None:
        trainer.trace.log(point)


class PeriodicCheckpointHook(Hook):
    """last.pt every ``checkpoint_interval_steps`` within an epoch (the epoch's end writes its own)."""

    def after_step(self, trainer: Trainer) -> None:
        interval, p = trainer.cfg.checkpoint_interval_steps, trainer.position
        if interval and p.step % interval == 0 and p.batch_in_epoch < trainer.batches:
            trainer.save_last()


class BestCheckpointHook(Hook):
    """best.pt when the epoch's point is the best so far; hyperparameters only, no paths (a home folder must
    not travel in the grader archive)."""

    def after_epoch(self, trainer: Trainer, point: dict[str, Any], improved: bool) -> None:
        if improved:
            best = trainer.position.best
            assert best is not None
            atomic.atomic_torch_save({"model": trainer.module.state_dict(), "config": trainer.cfg.hyperparameters(),
                               "best": best.model_dump()}, trainer.run.best)


class ProgressHook(Hook):
    """The console progress (bar or plain lines) and, every few seconds, the progress record in the status."""

    def __init__(self, progress: Progress, status: StatusWriter):
        self.progress, self.status = progress, status

    def after_train_point(self, trainer: Trainer, point: dict[str, Any]) -> None:
        self.progress.update(point["step"], point["epoch"], point["train/loss"], point["train/lr"])
        record = self.progress.record()  # rate-limited: a status write every few seconds, not per step
        if record is not None:
            self.status.progressed(record)

    def after_validation_point(self, trainer: Trainer, point: dict[str, Any]) -> None:
        # Said when the validation ran, before the checkpoint: a run killed later still shows it ran.
        self.progress.message(f"epoch {point['epoch']}/{trainer.cfg.num_epochs}: {_metrics_text(point)}")


def _metrics_text(point: dict[str, Any]) -> str:
    """"grader 5.44 IoU 11.22 SI-logRMSE 44.56", the metrics a validation point defines (a single-task run's
    has its task's alone)."""
    return " ".join(f"{label} {point[key]:.2f}" for key, label in HEADLINE_LABELS.items() if point.get(key) is not None)


class StatusHook(Hook):
    """After each epoch: the status (where training stands, the best point) and the summary that reports read."""

    def __init__(self, status: StatusWriter, progress: Progress):
        self.status, self.progress = status, progress

    def after_epoch(self, trainer: Trainer, point: dict[str, Any], improved: bool) -> None:
        p = trainer.position
        self.status.validated(epoch=p.epoch, step=p.step, best=p.best, elapsed_s=p.elapsed_s,
                              eta_s=self.progress.eta_seconds(), progress=self.progress.record(force=True))
        write_run_summary(trainer.run)


class WandbHook(Hook):
    """The W&B mirror: every point, validation panels every ``visualize_interval_epochs``, the best point."""

    def __init__(self, sink: WandbSink, val_loader: DataLoader[Any]):
        self.sink, self.val_loader = sink, val_loader

    def after_train_point(self, trainer: Trainer, point: dict[str, Any]) -> None:
        self.sink.log(point)

    def after_validation_point(self, trainer: Trainer, point: dict[str, Any]) -> None:
        # A single-task run's undefined grader goes as NaN: W&B's history scans (report.wandb_store) find
        # validation points by their grader.
        self.sink.log({k: math.nan if v is None else v for k, v in point.items()})

    def after_epoch(self, trainer: Trainer, point: dict[str, Any], improved: bool) -> None:
        cfg = trainer.cfg
        if self.sink.run is not None and point["epoch"] % cfg.visualize_interval_epochs == 0:
            panels, depth_values = validation_panels(trainer.model, self.val_loader, trainer.depth_unit,
                                                     trainer.device, cfg, cfg.visualize_num_images)
            if panels:
                self.sink.images(panels, depth_values, point["step"])
        if improved and trainer.position.best is not None:
            best = trainer.position.best.model_dump().items()
            self.sink.summary({f"best/{k}": v for k, v in best if not (isinstance(v, float) and math.isnan(v))})


def default_hooks(progress: Progress, status: StatusWriter, sink: WandbSink, val_loader: DataLoader[Any]) -> list[Hook]:
    """The hooks of a training run, in the order they run: the trace before anything that counts on it;
    best.pt before the status and summary that name its point; W&B and the console last (a mirror and a
    view: neither may hold up the records)."""
    return [TraceHook(), PeriodicCheckpointHook(), BestCheckpointHook(), StatusHook(status, progress),
            WandbHook(sink, val_loader), ProgressHook(progress, status)]
