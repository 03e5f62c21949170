"""Train, validate, predict and pack one multi-task run, with checkpoints and resume.

The flow, top to bottom in :func:`train`: open the run directory (lock, refuse changed code or
hyperparameters), read what its records allow (:mod:`mtl.run.recovery`), build data, model and
optimizer once, restore the last checkpoint if there is one, run the loop (:mod:`mtl.train.loop`, its
records kept by :mod:`mtl.train.hooks`), then predict the test split with the best checkpoint and write
submission.zip. Every file write is atomic (:mod:`mtl.run.io`), so a kill at any instant loses at most the
work since the last checkpoint.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

import torch

from mtl.config import Config
from mtl.data import build_datasets, load_depth_unit, resolve_dataset_root
from mtl.data.integrity import check_data_before_training
from mtl.data.loading import EpochSampler, make_loader
from mtl.data.transforms import DepthUnit
from mtl.models import build_model
from mtl.models.summary import count_model
from mtl.run import recovery
from mtl.run.errors import RecordError, RunRefused
from mtl.run.io import atomic_write_bytes, atomic_write_text
from mtl.run.layout import BEST_CHECKPOINT, CHECKPOINTS_DIR, STATUS_FILE, SUBMISSION_FILE, RunDirectory
from mtl.run.model import ModelSize, Resumed, RunState, Status
from mtl.run.records import read_config, read_status
from mtl.run.recovery import Records, say
from mtl.run.status import StatusWriter
from mtl.run.stopping import StopSignals
from mtl.run.summary import write_run_summary
from mtl.run.trace import LocalTrace, read_trace
from mtl.train import environment
from mtl.train.hooks import default_hooks
from mtl.train.loop import Diverged, PauseReached, StopRequested, Trainer
from mtl.train.losses import MultiTaskLoss
from mtl.train.optim import build_optimizer, build_scheduler
from mtl.train.prediction import predict_and_pack
from mtl.train.runtime import seed_everything, select_device
from mtl.train.submission import (
    build_source_zip,
    code_version,
    packed_problems,
    packed_record,
    source_zip_differences,
)
from mtl.train.tracking import Progress, WandbSink, records_summary, wandb_identity
from mtl.train.weighting import build_weighting


def train(cfg: Config, stop: StopSignals | None = None, *, repair_only: bool = False,
          say: Callable[[str], None] = say) -> Status:
    """Train (or resume, or skip if finished) the run in ``cfg.log_dir``; returns the final status. A run whose
    training is done but lost files is rebuilt, never trained; ``repair_only`` stops there (RunRefused for a
    run still to train). ``stop``: the stop signals received so far (the trainer takes them over once set
    up). RunLocked: another process owns the directory; RunRefused: the records forbid training."""
    run = RunDirectory(cfg.log_dir)
    with run.exclusive():
        run.check_same_run(source_zip_differences(run.source_zip, cfg) if run.source_zip.exists() else [])
        finished = _finished_status(run, say)
        if finished is not None and not repair_only:
            return finished
        records = recovery.inspect(run, cfg.num_epochs, say)
        finished = _finished_status(run, say)
        if finished is not None:
            return finished
        if recovery.training_done(records):
            return _rebuild_finished(cfg, run, records, say)
        if repair_only:
            raise RunRefused(f"{run.path}: training is not done (no validation point of epoch {cfg.num_epochs} "
                             f"in {run.metrics}); nothing to repair: `mtl-ablate run` resumes it")
        return _train_locked(cfg, run, stop or StopSignals(), records)


def repair(cfg: Config, say: Callable[[str], None] = say) -> Status:
    """Rebuild what a run whose training is done has lost (status, submission, best.pt), training nothing."""
    return train(cfg, repair_only=True, say=say)


def _finished_status(run: RunDirectory, say: Callable[[str], None]) -> Status | None:
    """The status of a finished run whose records check themselves: its config.yaml is the config it trained
    (else RunRefused, naming both) and its submission.zip the one it packed. None otherwise (a damaged status
    too: the records decide then); a damaged submission.zip is set aside, to be rebuilt from best.pt."""
    try:
        status = read_status(run.path)
    except ValueError:
        return None
    if status is None or status.state is not RunState.FINISHED:
        return None
    try:
        read_config(run.path)  # checks it against the status's config_hash
    except RecordError as exc:
        raise RunRefused(str(exc)) from None
    return status if _submission_sound(run, status, say) else None


def _submission_sound(run: RunDirectory, status: Status | None, say: Callable[[str], None]) -> bool:
    """Whether submission.zip is there and is what the trainer packed (or, without a digest in ``status``,
    validates). A damaged one is moved aside (never deleted), to be rebuilt from best.pt; RunRefused when
    best.pt is gone too."""
    if not run.submission.exists():
        return False
    problems = packed_problems(run.submission, status.submission if status else None, run.status_path)
    if not problems:
        return True
    if not run.best.exists():
        raise RunRefused(f"{problems[0]}; and {run.best} is missing, so it cannot be rebuilt: {recovery.RETRAIN_HINT}")
    os.replace(run.submission, run.damaged_submission)
    say(f"{problems[0]}; moved to {run.damaged_submission.name}, rebuilding it from "
        f"{CHECKPOINTS_DIR}/{BEST_CHECKPOINT}")
    return False


@dataclass
class Parts:
    """What a run is built from: its checked datasets, depth unit and model (on its device)."""

    datasets: dict[str, Any]
    depth_unit: DepthUnit
    model: torch.nn.Module

    def model_size(self) -> ModelSize:
        sample = self.datasets["val"][0]["image"]
        height, width = int(sample.shape[-2]), int(sample.shape[-1])
        summary = count_model(self.model, height, width)
        return ModelSize(params=summary["params"], gflops=summary["gflops"], input=(height, width))


def build_parts(cfg: Config, device: torch.device) -> Parts:
    datasets = build_datasets(cfg)
    check_data_before_training(datasets)
    depth_unit = load_depth_unit(cfg, datasets["train"].root)
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return Parts(datasets, depth_unit, model)


def _train_locked(cfg: Config, run: RunDirectory, stop: StopSignals, records: Records) -> Status:
    device = _set_up_process(cfg, run)
    root = resolve_dataset_root(cfg)  # (config and code are recorded first: a failure here is the run's)
    dataset = recovery.dataset_fingerprint(root)
    if records.last is not None:
        recovery.check_same_dataset(records.last.dataset, dataset, root, run.last)
    status = StatusWriter(run)
    _mark_running(cfg, status, records, dataset)
    parts = build_parts(cfg, device)
    weighting = build_weighting(cfg, device)
    optimizer = build_optimizer(cfg, parts.model, weighting.parameters())
    scheduler = build_scheduler(cfg, optimizer)
    sink = _wandb_sink(cfg, run, status)
    used = environment.capture(device)
    environment.record(run, used)
    sink.config({"environment": environment.summary(used)})
    trainer = Trainer(cfg=cfg, run=run, device=device, model=parts.model, optimizer=optimizer, scheduler=scheduler,
                      loss_fn=MultiTaskLoss(cfg, parts.depth_unit), depth_unit=parts.depth_unit,
                      trace=LocalTrace(run.metrics), batches=_batches_per_epoch(len(parts.datasets["train"]), cfg),
                      stop=stop, scaler=torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None,
                      dataset=dataset, weighting=weighting)
    _restore(trainer, status, parts, sink)
    return _fit(trainer, parts, status, sink)


def _wandb_sink(cfg: Config, run: RunDirectory, status: StatusWriter) -> WandbSink:
    """The W&B mirror of this attempt: the directory's recorded W&B run, or a new one (an agent's id) that
    carries its history (mtl.train.tracking.wandb_identity); the status records which, unless W&B is off."""
    recorded = status.status.wandb_run_id if status.status else None
    identity = wandb_identity(cfg.wandb_run_id, recorded, run.path)
    sink = WandbSink(cfg, run.path, identity.run_id, continues=identity.continues,
                     holds_history=identity.holds_history)
    if sink.run_id is not None:  # W&B off for this attempt: the W&B run that holds the history stays recorded
        same = sink.run_id == recorded
        status.record(wandb_run_id=sink.run_id,
                      wandb_url=sink.url or (status.status.wandb_url if same and status.status else None))
    return sink


def _mark_running(cfg: Config, status: StatusWriter, records: Records, dataset: str) -> None:
    """The status of a running attempt; its position and best point come from last.pt when there is one
    (the status may be behind it or lost)."""
    previous = status.status
    if records.last is not None:
        epoch, step, best = records.last.epoch, records.last.step, records.last.best
    else:
        epoch, step = (previous.epoch, previous.step) if previous else (0, 0)
        best = previous.best if previous else None
    status.running(num_epochs=cfg.num_epochs, config_hash=cfg.config_hash(), code_version=code_version(),
                   dataset=dataset, pid=os.getpid(), host=socket.gethostname(), epoch=epoch, step=step, best=best)


def _rebuild_finished(cfg: Config, run: RunDirectory, records: Records, say: Callable[[str], None] = say) -> Status:
    """Training is done and recorded (trace and best.pt): rebuild what is missing, train nothing."""
    assert records.best is not None and records.final_point is not None
    recovery.check_best_in_trace_or_refuse(run, records.best)
    device = _set_up_process(cfg, run)
    dataset = recovery.dataset_fingerprint(resolve_dataset_root(cfg))
    status = StatusWriter(run)
    previous = status.status
    model = previous.model if previous else None
    sound = _submission_sound(run, previous if previous is not None and previous.state is RunState.FINISHED
                              else None, say)
    if not sound or model is None:
        parts = build_parts(cfg, device)
        if not run.submission.exists():
            say(f"rebuilding {SUBMISSION_FILE} from {CHECKPOINTS_DIR}/{BEST_CHECKPOINT} (prediction runs again)")
            predict_and_pack(cfg, run, parts.datasets, parts.model, parts.depth_unit, device)
        model = model or parts.model_size()
    packed = previous.submission if sound and previous is not None else None
    packed = packed or packed_record(run.submission, cfg.task_names)
    final = records.final_point
    if previous is None or previous.state is not RunState.FINISHED or previous.best != records.best:
        say(f"rebuilding {STATUS_FILE} from the trace and {CHECKPOINTS_DIR}/{BEST_CHECKPOINT}")
    rebuilt = status.finished(
        epoch=final["epoch"], step=final["step"], best=records.best, num_epochs=cfg.num_epochs,
        config_hash=cfg.config_hash(), code_version=(previous.code_version if previous else None) or code_version(),
        started_at=previous.started_at if previous else None,
        finished_at=previous.finished_at if previous else None, model=model,
        elapsed_s=final.get("time", previous.elapsed_s if previous else None), dataset=dataset, submission=packed)
    write_run_summary(run)
    return rebuilt


def _set_up_process(cfg: Config, run: RunDirectory) -> torch.device:
    """Clear cut-short writes, record config and code, seed, and pick the device."""
    run.remove_stale_temporaries()
    # Without log_dir: the run directory is where the file lies, so a copied runs folder never points back.
    atomic_write_text(run.config_path, cfg.to_yaml(exclude=("log_dir",)))
    if not run.source_zip.exists():
        atomic_write_bytes(run.source_zip, build_source_zip(cfg))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed, cfg.deterministic)
    device = select_device(cfg.device)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
    return device


def _batches_per_epoch(dataset_len: int, cfg: Config) -> int:
    batches = dataset_len // cfg.batch_size
    if batches == 0:
        raise ValueError(f"training split has {dataset_len} images, fewer than batch_size {cfg.batch_size}")
    return min(batches, cfg.limit_train_batches) if cfg.limit_train_batches else batches


def _restore(trainer: Trainer, status: StatusWriter, parts: Parts, sink: WandbSink) -> None:
    """Continue from last.pt when there is one; record the model's size once; compile for training."""
    cfg, run = trainer.cfg, trainer.run
    if run.last.exists():
        trainer.restore(torch.load(run.last, map_location=trainer.device, weights_only=False))
        p = trainer.position
        print(f"mtl-train: resuming from step {p.step} (epoch {p.epoch + 1}/{cfg.num_epochs}, "
              f"{p.batch_in_epoch} batches into it)", flush=True)
        # With this attempt's pid, so the suite tells this resume from an earlier attempt's.
        status.record(resumed=Resumed(pid=os.getpid(), step=p.step, epoch=p.epoch + 1))
    # Points logged after the checkpoint -- or, without one, by an attempt killed before its first
    # checkpoint -- are logged again by the training that follows; kept, they would appear twice.
    trainer.trace.truncate_after(trainer.position.step)
    if status.status is not None and status.status.model is None:
        status.sized(parts.model_size())
    # W&B gets what the records hold: the trace's points when its run is new to them, and in every attempt
    # the best point and model size (a resumed run improves on a best point an earlier attempt found).
    sink.carry(lambda: read_trace(run.metrics), lambda: records_summary(status.status), trainer.position.step)
    trainer.model = torch.compile(parts.model) if cfg.compile else parts.model  # type: ignore[assignment]


def _fit(trainer: Trainer, parts: Parts, status: StatusWriter, sink: WandbSink) -> Status:
    """The epochs still to do, then the submission; ends in the final status (finished, interrupted or
    diverged). A stop signal from here on checkpoints where training stands."""
    cfg, run, p = trainer.cfg, trainer.run, trainer.position
    datasets = parts.datasets
    sampler = EpochSampler(len(datasets["train"]), cfg.seed)
    train_loader = make_loader(datasets["train"], cfg, train=True, sampler=sampler)
    val_loader = make_loader(datasets["val"], cfg, train=False)
    progress = Progress(cfg.progress, cfg.num_epochs * trainer.batches, p.step, cfg.num_epochs)
    trainer.hooks = default_hooks(progress, status, sink, val_loader)
    trainer.stop.install()  # from here on the loop checks them between steps
    try:
        trainer.fit(train_loader, val_loader, sampler)
        progress.close()
        predict_and_pack(cfg, run, datasets, trainer.module, trainer.depth_unit, trainer.device)
        packed = packed_record(run.submission, cfg.task_names)
    except PauseReached:
        progress.close()
        trainer.trace.sync()
        sink.finish()  # the same W&B run continues when the race asks for more of it
        return _ended(run, status.paused(epoch=p.epoch, step=p.step, best=p.best))
    except StopRequested:
        progress.close()
        p.elapsed_s = trainer.clock.elapsed()
        trainer.save_last()
        sink.interrupted(exit_code=143, requeue=trainer.stop.requeue)
        return _ended(run, status.interrupted(error=f"stopped by {trainer.stop.describe()}; checkpoint at step "
                                                     f"{p.step}", epoch=p.epoch, step=p.step, best=p.best))
    except Diverged as exc:
        progress.close()
        trainer.trace.sync()
        sink.finish(exit_code=3)
        kept = trainer.checkpoint_step
        where = (f"last good checkpoint kept: {run.last} at step {kept}" if kept is not None
                 else "no checkpoint was written before it (a retry starts from the beginning)")
        return _ended(run, status.diverged(error=f"{exc}; {where}", diverged_step=p.step, checkpoint_step=kept))
    except BaseException:
        progress.close()
        sink.finish(exit_code=1)
        raise
    trainer.trace.sync()
    sink.finish()
    final = _ended(run, status.finished(epoch=p.epoch, step=p.step, best=p.best, submission=packed))
    # A finished run keeps one checkpoint: best.pt, which submission.zip and repairs are built from.
    # last.pt only served resuming, which a finished run never does again.
    run.last.unlink(missing_ok=True)
    return final


def _ended(run: RunDirectory, status: Status) -> Status:
    """The run's final status, and its summary to match (reports read the summary, not the trace)."""
    write_run_summary(run)
    return status
