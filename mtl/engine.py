"""Train, validate, predict and pack one multi-task run, with checkpoints and resume.

The flow, top to bottom in :func:`train`: open the run directory (lock, refuse changed code or
hyperparameters), build data/model/optimizer, restore the last checkpoint if there is one, then per
epoch train -> validate -> checkpoint; finally predict the test split with the best checkpoint and
write submission.zip. Every file write is atomic (``mtl.io``), so a kill at any instant loses at
most the work since the last checkpoint. The parts it calls live beside it: ``mtl.runtime`` (device,
seeds, clock), ``mtl.optim``, ``mtl.data.loading``, ``mtl.evaluation``, ``mtl.visualize``,
``mtl.prediction`` and the data pre-flight in ``mtl.data.integrity``.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader

from mtl import recovery
from mtl.best import better_point
from mtl.config import Config
from mtl.data import build_datasets, load_depth_unit, resolve_dataset_root
from mtl.data.integrity import check_data_before_training
from mtl.data.loading import EpochSampler, make_loader
from mtl.data.transforms import DepthUnit
from mtl.evaluation import evaluate
from mtl.io import atomic_torch_save, atomic_write_bytes, atomic_write_text
from mtl.losses import MultiTaskLoss
from mtl.models import build_model, model_summary
from mtl.optim import build_optimizer, build_scheduler
from mtl.prediction import predict_and_pack
from mtl.records import read_points
from mtl.recovery import Records, say
from mtl.run_summary import write_run_summary
from mtl.rundir import (
    BEST_CHECKPOINT,
    CHECKPOINTS_DIR,
    STATUS_FILE,
    STATUS_WANDB_URL,
    SUBMISSION_FILE,
    RunDirectory,
    RunRefused,
    State,
    now_iso,
)
from mtl.runtime import Clock, autocast, restore_rng_states, rng_states, seed_everything, select_device, to_device
from mtl.stopping import StopSignals
from mtl.submission import build_source_zip, code_version, source_zip_differences
from mtl.tracking import LocalTrace, Progress, WandbSink, derive_run_id
from mtl.visualize import validation_panels

TRAIN_LOG_INTERVAL = 10  # optimizer steps between training points (and non-finite-loss checks)


class Diverged(RuntimeError):
    """A non-finite loss: the run stops, keeping the last good checkpoint."""


@dataclass
class Position:
    """Where training stands: ``epoch`` in progress (0-based) and batches of it already done."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    elapsed_s: float = 0.0
    best: dict[str, Any] | None = None




# --------------------------------------------------------------------------------- training
class StopRequested(Exception):
    """A stop signal (``mtl.stopping.STOP_SIGNALS``) arrived; the loop checkpoints and exits."""


@dataclass
class Trainer:
    cfg: Config
    run: RunDirectory
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: MultiTaskLoss
    depth_unit: DepthUnit
    trace: LocalTrace
    wandb: WandbSink
    position: Position = field(default_factory=Position)
    stop: StopSignals = field(default_factory=StopSignals)
    scaler: torch.amp.GradScaler | None = None
    # Training losses summed since the last logged point (total, semseg, depth) and their count. They
    # travel in the checkpoint, so a point logged after a mid-interval resume averages the same steps.
    loss_sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    loss_count: int = 0
    checkpoint_step: int | None = None  # step of the checkpoint in last.pt (None: none yet)
    dataset: str | None = None  # fingerprint of the dataset's files, checked on resume

    @property
    def stop_signal(self) -> int | None:
        """The latest stop signal received (also while the run was being set up), None if none."""
        return self.stop.last

    @property
    def module(self) -> torch.nn.Module:
        """The model itself, also while ``model`` is its torch.compile wrapper (whose state dict keys carry an
        ``_orig_mod.`` prefix that the plain model, which resume and prediction load into, does not know)."""
        return getattr(self.model, "_orig_mod", self.model)

    def checkpoint_state(self) -> dict[str, Any]:
        p = self.position
        return {
            "model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": p.epoch, "batch_in_epoch": p.batch_in_epoch, "step": p.step, "elapsed_s": p.elapsed_s,
            "best": p.best, "rng": rng_states(), "config": self.cfg.hyperparameters(),
            "loss_sums": list(self.loss_sums), "loss_count": self.loss_count, "dataset": self.dataset,
        }

    def check_finite(self) -> None:
        """Raise Diverged when a weight or buffer holds NaN/Inf: such a model must never become a checkpoint
        (a finite loss does not prove it: the step after it can still blow the weights up)."""
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise Diverged(f"non-finite values in {name} after step {self.position.step}")

    def save_last(self) -> None:
        self.check_finite()
        self.trace.sync()  # the points up to this checkpoint must survive a crash that keeps the checkpoint
        atomic_torch_save(self.checkpoint_state(), self.run.last)
        self.checkpoint_step = self.position.step

    def restore(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.position = Position(epoch=state["epoch"], batch_in_epoch=state["batch_in_epoch"], step=state["step"],
                                 elapsed_s=state["elapsed_s"], best=state["best"])
        self.loss_sums, self.loss_count = list(state.get("loss_sums", [0.0, 0.0, 0.0])), state.get("loss_count", 0)
        self.checkpoint_step = self.position.step
        restore_rng_states(state["rng"])

    def train_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with autocast(self.cfg, self.device):
            outputs = self.model(batch["image"])
        total, losses = self.loss_fn(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total.backward()
            self.optimizer.step()
        return total.detach(), {k: v.detach() for k, v in losses.items()}

    def train_epoch(self, loader: DataLoader, batches: int, progress: Progress, clock: Clock) -> None:
        cfg, p = self.cfg, self.position
        self.model.train()
        sums = torch.tensor(self.loss_sums, dtype=torch.float64, device=self.device)
        for batch in loader:
            if p.batch_in_epoch >= batches:
                break
            batch = to_device(batch, self.device, cfg.channels_last)
            total, losses = self.train_step(batch)
            sums += torch.stack([total.double(), losses["semseg"].double(), losses["depth"].double()])
            self.loss_count += 1
            p.batch_in_epoch += 1
            p.step += 1
            p.elapsed_s = clock.elapsed()
            if p.step % TRAIN_LOG_INTERVAL == 0 or p.batch_in_epoch == batches:
                loss, loss_semseg, loss_depth = (sums / self.loss_count).tolist()
                if not math.isfinite(loss):
                    raise Diverged(f"non-finite training loss ({loss}) at step {p.step}, epoch {p.epoch + 1}")
                point = {"step": p.step, "epoch": p.epoch + 1, "time": round(p.elapsed_s, 3), "train/loss": loss,
                         "train/loss_semseg": loss_semseg, "train/loss_depth": loss_depth,
                         "train/lr": self.optimizer.param_groups[0]["lr"]}
                self.trace.log(point)
                self.wandb.log(point)
                progress.update(p.step, p.epoch + 1, loss, point["train/lr"])
                record = progress.record()  # rate-limited: a status write every few seconds, not per step
                if record is not None:
                    self.run.write_status(progress=record, eta_s=record["eta_s"])
                sums.zero_()
                self.loss_sums, self.loss_count = [0.0, 0.0, 0.0], 0
            checkpoint_now = cfg.checkpoint_interval_steps and p.step % cfg.checkpoint_interval_steps == 0 \
                and p.batch_in_epoch < batches
            if checkpoint_now or self.stop_signal is not None:
                self.loss_sums = sums.tolist()
            if checkpoint_now:
                self.save_last()
            if self.stop_signal is not None:
                raise StopRequested()

    def validate_and_checkpoint(self, loader: DataLoader, progress: Progress, clock: Clock) -> None:
        """Close the epoch: validation point, W&B panels, best.pt on a better grader, schedule step, last.pt
        and status."""
        cfg, p = self.cfg, self.position
        point = evaluate(self.model, loader, self.loss_fn, self.depth_unit, self.device, cfg)
        p.elapsed_s = clock.elapsed()
        point = {"step": p.step, "epoch": p.epoch + 1, "time": round(p.elapsed_s, 3), **point}
        self.trace.log(point)
        self.wandb.log(point)
        if not math.isfinite(point["val/loss"]):  # finite but huge weights can still predict NaN/Inf
            raise Diverged(f"non-finite validation loss ({point['val/loss']}) at step {p.step}, "
                           f"epoch {p.epoch + 1}")
        if self.wandb.run is not None and (p.epoch + 1) % cfg.visualize_interval_epochs == 0:
            panels, depth_values = validation_panels(self.model, loader, self.depth_unit, self.device, cfg,
                                                     cfg.visualize_num_images)
            if panels:
                self.wandb.images(panels, depth_values, p.step)
        improved = better_point(point, p.best)
        if improved:
            p.best = {"step": p.step, "epoch": p.epoch + 1, "grader": point["val/grader"],
                      "iou": point["val/iou"], "si_logrmse": point["val/si_logrmse"]}
        progress.message(f"epoch {p.epoch + 1}/{cfg.num_epochs}: grader {point['val/grader']:.2f} "
                         f"IoU {point['val/iou']:.2f} SI-logRMSE {point['val/si_logrmse']:.2f}")
        self.scheduler.step()
        p.epoch += 1
        p.batch_in_epoch = 0
        # last.pt before best.pt: a kill between the two leaves last.pt holding the validated model and its
        # best point, from which the next start rewrites best.pt (mtl.recovery); never a best.pt ahead of it.
        self.save_last()
        if improved:
            # Hyperparameters only: paths (a home folder) must not travel in the grader archive.
            atomic_torch_save({"model": self.module.state_dict(), "config": cfg.hyperparameters(),
                               "best": p.best}, self.run.best)
            self.wandb.summary({f"best/{k}": v for k, v in p.best.items()})
        self.run.write_status(epoch=p.epoch, step=p.step, best=p.best, elapsed_s=round(p.elapsed_s, 3),
                              eta_s=progress.eta_seconds(), progress=progress.record(force=True))
        write_run_summary(self.run)


def _batches_per_epoch(dataset_len: int, cfg: Config) -> int:
    batches = dataset_len // cfg.batch_size
    if batches == 0:
        raise ValueError(f"training split has {dataset_len} images, fewer than batch_size {cfg.batch_size}")
    return min(batches, cfg.limit_train_batches) if cfg.limit_train_batches else batches


def train(cfg: Config, stop: StopSignals | None = None, *, repair_only: bool = False,
          say: Callable[[str], None] = say) -> dict[str, Any]:
    """Train (or resume, or skip if finished) the run in ``cfg.log_dir``; returns the final status. A run whose
    training is done but lost files is rebuilt, never trained; ``repair_only`` stops there (RunRefused for a
    run still to train). ``stop``: the stop signals received so far (the trainer takes them over once set
    up). RunLocked: another process owns the directory; RunRefused: the records forbid training."""
    run = RunDirectory(cfg.log_dir)
    with run.exclusive():
        run.check_same_run(source_zip_differences(run.source_zip, cfg) if run.source_zip.exists() else [])
        if run.is_finished() and not repair_only:
            return run.read_status()
        records = recovery.inspect(run, cfg.num_epochs, say)
        if run.is_finished():
            return run.read_status()
        if recovery.training_done(records):
            return _rebuild_finished(cfg, run, records, say)
        if repair_only:
            raise RunRefused(f"{run.path}: training is not done (no validation point of epoch {cfg.num_epochs} "
                             f"in {run.metrics}); nothing to repair: `mtl-ablate run` resumes it")
        return _train_locked(cfg, run, stop or StopSignals(), records)


def repair(cfg: Config, say: Callable[[str], None] = say) -> dict[str, Any]:
    """Rebuild what a run whose training is done has lost (status, submission, best.pt), training nothing."""
    return train(cfg, repair_only=True, say=say)


def _train_locked(cfg: Config, run: RunDirectory, stop: StopSignals, records: Records) -> dict[str, Any]:
    device = _set_up_process(cfg, run)
    root = resolve_dataset_root(cfg)  # (config and code are recorded first: a failure here is the run's)
    dataset = recovery.dataset_fingerprint(root)
    if records.last is not None:
        recovery.check_same_dataset(records.last.get("dataset"), dataset, root, run.last)
    status = _mark_running(cfg, run, records, dataset)
    trainer, datasets = _build_trainer(cfg, run, device, status, stop)
    trainer.dataset = dataset
    _restore(trainer, datasets, status)
    return _fit(trainer, datasets)


def _rebuild_finished(cfg: Config, run: RunDirectory, records: Records,
                      say: Callable[[str], None] = say) -> dict[str, Any]:
    """Training is done and recorded (trace and best.pt): rebuild what is missing, train nothing."""
    assert records.best is not None and records.final_point is not None
    recovery.check_best_in_trace(run, records.best, read_points(run.metrics))
    device = _set_up_process(cfg, run)
    dataset = recovery.dataset_fingerprint(resolve_dataset_root(cfg))
    previous = run.read_status()
    if not run.submission.exists() or previous.get("model") is None:
        datasets = build_datasets(cfg)
        check_data_before_training(datasets)
        depth_unit = load_depth_unit(cfg, datasets["train"].root)
        model = build_model(cfg).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if not run.submission.exists():
            say(f"rebuilding {SUBMISSION_FILE} from {CHECKPOINTS_DIR}/{BEST_CHECKPOINT} (prediction runs again)")
            predict_and_pack(cfg, run, datasets, model, depth_unit, device)
        if previous.get("model") is None:
            sample = datasets["val"][0]["image"]
            summary = model_summary(cfg, sample.shape[-2], sample.shape[-1])
            previous["model"] = {"params": summary["params"], "gflops": summary["gflops"],
                                 "input": [int(sample.shape[-2]), int(sample.shape[-1])]}
    final = records.final_point
    if previous.get("state") != State.FINISHED or previous.get("best") != records.best:
        say(f"rebuilding {STATUS_FILE} from the trace and {CHECKPOINTS_DIR}/{BEST_CHECKPOINT}")
    return _end_status(
        run, state=State.FINISHED, error=None, traceback=None, num_epochs=cfg.num_epochs, config_hash=cfg.config_hash(),
        code_version=previous.get("code_version") or code_version(), started_at=previous.get("started_at"),
        finished_at=previous.get("finished_at") or now_iso(), epoch=final.get("epoch"), step=final.get("step"),
        best=records.best, model=previous["model"], elapsed_s=final.get("time", previous.get("elapsed_s")),
        eta_s=0.0, dataset=dataset)


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


def _mark_running(cfg: Config, run: RunDirectory, records: Records, dataset: str) -> dict[str, Any]:
    """The status of a running attempt, keeping what earlier attempts recorded (start, progress, model);
    progress and best point come from last.pt when there is one (the status may be behind it or lost)."""
    previous = run.read_status()
    if records.last is not None:
        previous = {**previous, "epoch": records.last["epoch"], "step": records.last["step"],
                    "best": records.last["best"]}
    return run.write_status(
        state="running", error=None, traceback=None, num_epochs=cfg.num_epochs, config_hash=cfg.config_hash(),
        code_version=code_version(), started_at=previous.get("started_at") or now_iso(), finished_at=None,
        pid=os.getpid(), host=socket.gethostname(), epoch=previous.get("epoch", 0), step=previous.get("step", 0),
        best=previous.get("best"), model=previous.get("model"), eta_s=None, elapsed_s=previous.get("elapsed_s", 0.0),
        dataset=dataset, progress=None)  # an earlier attempt's speed and ETA say nothing about this one


def _build_trainer(cfg: Config, run: RunDirectory, device: torch.device, status: dict[str, Any],
                   stop: StopSignals) -> tuple[Trainer, dict[str, Any]]:
    """Checked datasets, then model, optimizer, schedule, loss and W&B sink in a fresh Trainer."""
    datasets = build_datasets(cfg)
    check_data_before_training(datasets)
    depth_unit = load_depth_unit(cfg, datasets["train"].root)
    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_scheduler(cfg, optimizer)
    run_id = cfg.wandb_run_id or status.get("wandb_run_id") or derive_run_id(run.path)
    trainer = Trainer(cfg=cfg, run=run, device=device, model=model, optimizer=optimizer, scheduler=scheduler,
                      loss_fn=MultiTaskLoss(cfg, depth_unit), depth_unit=depth_unit, trace=LocalTrace(run.metrics),
                      wandb=WandbSink(cfg, run.path, run_id), stop=stop,
                      scaler=torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None)
    run.write_status(wandb_run_id=trainer.wandb.run_id, **{STATUS_WANDB_URL: trainer.wandb.url})
    return trainer, datasets


def _restore(trainer: Trainer, datasets: dict[str, Any], status: dict[str, Any]) -> None:
    """Continue from last.pt when there is one; record the model's size once; compile for training."""
    cfg, run, model = trainer.cfg, trainer.run, trainer.model
    if run.last.exists():
        trainer.restore(torch.load(run.last, map_location=trainer.device, weights_only=False))
        p = trainer.position
        print(f"mtl-train: resuming from step {p.step} (epoch {p.epoch + 1}/{cfg.num_epochs}, "
              f"{p.batch_in_epoch} batches into it)", flush=True)
        # With this attempt's pid, so the suite tells this resume from an earlier attempt's.
        run.write_status(resumed={"pid": os.getpid(), "step": p.step, "epoch": p.epoch + 1})
    # Points logged after the checkpoint -- or, without one, by an attempt killed before its first
    # checkpoint -- are logged again by the training that follows; kept, they would appear twice.
    trainer.trace.truncate_after(trainer.position.step)
    if status.get("model") is None:
        sample = datasets["val"][0]["image"]
        summary = model_summary(cfg, sample.shape[-2], sample.shape[-1])
        run.write_status(model={"params": summary["params"], "gflops": summary["gflops"],
                                "input": [int(sample.shape[-2]), int(sample.shape[-1])]})
        trainer.wandb.summary({"model/params": summary["params"], "model/gflops": summary["gflops"]})
    trainer.model = torch.compile(model) if cfg.compile else model


def _fit(trainer: Trainer, datasets: dict[str, Any]) -> dict[str, Any]:
    """The epochs still to do, then the submission; ends in the final status (finished, interrupted or
    diverged). A stop signal from here on checkpoints where training stands."""
    cfg, run, p = trainer.cfg, trainer.run, trainer.position
    sampler = EpochSampler(len(datasets["train"]), cfg.seed)
    train_loader = make_loader(datasets["train"], cfg, train=True, sampler=sampler)
    val_loader = make_loader(datasets["val"], cfg, train=False)
    batches = _batches_per_epoch(len(datasets["train"]), cfg)
    progress = Progress(cfg.progress, cfg.num_epochs * batches, p.step, cfg.num_epochs)
    clock = Clock(p.elapsed_s)
    trainer.stop.install()  # from here on the loop checks them between steps
    try:
        if trainer.stop_signal is not None:  # arrived during set-up: checkpoint where we stand, train nothing
            raise StopRequested()
        while p.epoch < cfg.num_epochs:
            sampler.set_epoch(p.epoch, skip_samples=p.batch_in_epoch * cfg.batch_size)
            trainer.train_epoch(train_loader, batches, progress, clock)
            trainer.check_finite()  # before a best.pt could be written from the validation below
            trainer.validate_and_checkpoint(val_loader, progress, clock)
            if trainer.stop_signal is not None:
                raise StopRequested()
        progress.close()
        predict_and_pack(cfg, run, datasets, trainer.module, trainer.depth_unit, trainer.device)
    except StopRequested:
        progress.close()
        p.elapsed_s = clock.elapsed()
        trainer.save_last()
        trainer.wandb.interrupted(exit_code=143)
        return _end_status(run, state="interrupted", error=f"stopped by {trainer.stop.describe()}; "
                                f"checkpoint at step {p.step}", epoch=p.epoch, step=p.step, best=p.best)
    except Diverged as exc:
        progress.close()
        trainer.trace.sync()
        trainer.wandb.finish(exit_code=3)
        kept = trainer.checkpoint_step
        where = (f"last good checkpoint kept: {run.last} at step {kept}" if kept is not None
                 else "no checkpoint was written before it (a retry starts from the beginning)")
        return _end_status(run, state="diverged", error=f"{exc}; {where}", diverged_step=p.step,
                                checkpoint_step=kept)
    except BaseException:
        progress.close()
        trainer.wandb.finish(exit_code=1)
        raise
    trainer.trace.sync()
    trainer.wandb.finish()
    status = _end_status(run, state="finished", finished_at=now_iso(), eta_s=0.0, epoch=p.epoch, step=p.step,
                         best=p.best)
    # A finished run keeps one checkpoint: best.pt, which submission.zip and repairs are built from.
    # last.pt only served resuming, which a finished run never does again.
    run.last.unlink(missing_ok=True)
    return status


def _end_status(run: RunDirectory, **fields: Any) -> dict[str, Any]:
    """The run's final status, and its summary to match (reports read the summary, not the trace)."""
    status = run.write_status(**fields)
    write_run_summary(run)
    return status
