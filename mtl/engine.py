"""Train, validate, predict and pack one multi-task run, with checkpoints and resume.

The flow, top to bottom in :func:`train`: open the run directory (lock, refuse changed code or
hyperparameters), build data/model/optimizer, restore the last checkpoint if there is one, then per
epoch train -> validate -> checkpoint; finally predict the test split with the best checkpoint and
write submission.zip. Every file write is atomic (``mtl.io``), so a kill at any instant loses at
most the work since the last checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from mtl.config import Config
from mtl.data import build_datasets, load_depth_unit
from mtl.data.integrity import check_split
from mtl.data.miniscapes import DEPTH_MAX_M, DEPTH_MIN_M, PALETTE, DatasetError, write_depth, write_semseg
from mtl.data.transforms import DepthUnit
from mtl.io import atomic_torch_save, atomic_write_bytes, atomic_write_text
from mtl.losses import MultiTaskLoss
from mtl.metrics import MetricAccumulator
from mtl.models import build_model, model_summary
from mtl.rundir import RunDirectory, now_iso
from mtl.stopping import StopSignals
from mtl.submission import build_source_zip, code_version, source_zip_differences, write_submission
from mtl.tracking import LocalTrace, Progress, WandbSink, derive_run_id

TRAIN_LOG_INTERVAL = 10  # optimizer steps between training points (and non-finite-loss checks)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


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


# ---------------------------------------------------------------------------------------- helpers
def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"config key 'device' is {name!r} but CUDA is not available on this machine")
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True


class EpochSampler(Sampler):
    """Yields ``(epoch, position)``: a permutation seeded by (seed, epoch), resumable mid-epoch.

    The dataset seeds each sample's augmentation from (seed, epoch, index), so the batches after a
    resume are exactly those an uninterrupted run would have seen.
    """

    def __init__(self, length: int, seed: int):
        self.length, self.seed = length, seed
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_samples: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        return iter([(self.epoch, position) for position in order[self.skip:]])

    def __len__(self) -> int:
        return self.length - self.skip


def make_loader(dataset, cfg: Config, *, train: bool, sampler: Sampler | None = None) -> DataLoader:
    workers = cfg.workers if train else cfg.workers_validation
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size if train else cfg.batch_size_validation,
        sampler=sampler,
        shuffle=False,
        drop_last=train,
        num_workers=workers,
        pin_memory=cfg.pin_memory,
        persistent_workers=cfg.persistent_workers and workers > 0,
    )


def build_optimizer(cfg: Config, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.optimizer_lr, momentum=cfg.optimizer_momentum,
                               weight_decay=cfg.optimizer_weight_decay)
    return torch.optim.Adam(params, lr=cfg.optimizer_lr, weight_decay=cfg.optimizer_weight_decay)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    # Poly schedule stepped per epoch, as the template does.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: max(0.0, 1.0 - epoch / cfg.num_epochs) ** cfg.lr_scheduler_power)


def autocast(cfg: Config, device: torch.device):
    if cfg.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool) -> dict[str, Any]:
    moved = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if channels_last:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# ------------------------------------------------------------------------------ visualisation
def _colorize(ids: np.ndarray) -> np.ndarray:
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[: len(PALETTE)] = np.asarray(PALETTE, dtype=np.uint8)
    return palette[ids.astype(np.uint8)]


def _depth_gray(depth_m: np.ndarray) -> np.ndarray:
    disparity = (1.0 / np.clip(depth_m, DEPTH_MIN_M, DEPTH_MAX_M) - 1 / DEPTH_MAX_M) / (1 / DEPTH_MIN_M - 1 / DEPTH_MAX_M)
    gray = (np.sqrt(disparity) * 255).astype(np.uint8)
    gray[depth_m <= 0] = 0
    return np.repeat(gray[..., None], 3, axis=2)


def visual_panels(batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor], depth_unit: DepthUnit,
                  count: int) -> list[np.ndarray]:
    """input | predicted seg | true seg | predicted depth | true depth, one row image per sample."""
    panels = []
    for i in range(min(count, batch["image"].shape[0])):
        image = (batch["image"][i].float().cpu() * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1)
        rgb = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        pred_ids = outputs["semseg"][i].argmax(0).cpu().numpy()
        pred_depth = depth_unit.decode(outputs["depth"][i].float()).squeeze(0).cpu().numpy()
        panels.append(np.concatenate([
            rgb, _colorize(pred_ids), _colorize(batch["semseg"][i].cpu().numpy()),
            _depth_gray(pred_depth), _depth_gray(batch["depth"][i].squeeze(0).cpu().numpy()),
        ], axis=1))
    return panels


# ------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, loss_fn: MultiTaskLoss, depth_unit: DepthUnit,
             device: torch.device, cfg: Config, visualize: int = 0
             ) -> tuple[dict[str, float], list[np.ndarray], np.ndarray | None]:
    """Validation metrics (``val/...`` keys), visual panels of the first images, predicted depths (m)."""
    model.eval()
    metrics = MetricAccumulator(device)
    loss_sums = torch.zeros(2, dtype=torch.float64, device=device)
    samples = 0
    panels: list[np.ndarray] = []
    depth_sample: list[np.ndarray] = []
    for batch in loader:
        batch = to_device(batch, device, cfg.channels_last)
        with autocast(cfg, device):
            outputs = model(batch["image"])
        _, losses = loss_fn(outputs, batch)
        size = batch["image"].shape[0]
        loss_sums += torch.stack([losses["semseg"].double(), losses["depth"].double()]) * size
        samples += size
        pred_depth_m = depth_unit.decode(outputs["depth"].float())
        metrics.update(outputs["semseg"], batch["semseg"], pred_depth_m, batch["depth"])
        if len(panels) < visualize:
            panels += visual_panels(batch, outputs, depth_unit, visualize - len(panels))
            depth_sample.append(pred_depth_m[batch["depth"] > 0].cpu().numpy())
    result = metrics.compute()
    loss_semseg, loss_depth = (loss_sums / max(samples, 1)).tolist()
    point = {"val/grader": result.pop("grader"), "val/iou": result.pop("iou"),
             "val/si_logrmse": result.pop("si_logrmse"), "val/loss": loss_semseg + loss_depth,
             "val/loss_semseg": loss_semseg, "val/loss_depth": loss_depth}
    point.update({f"val/{k}": v for k, v in result.items()})
    return point, panels, (np.concatenate(depth_sample) if depth_sample else None)


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, depth_unit: DepthUnit, device: torch.device, cfg: Config,
            out_dir: Path) -> list[int]:
    """Write test predictions in the MiniScapes encodings; returns the indices written."""
    model.eval()
    written = []
    for task in ("semseg", "depth"):
        (out_dir / task).mkdir(parents=True, exist_ok=True)
    for batch in loader:
        images = batch["image"].to(device)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(cfg, device):
            outputs = model(images)
        ids = outputs["semseg"].argmax(1).to(torch.uint8).cpu().numpy()
        depth_m = depth_unit.decode(outputs["depth"].float()).squeeze(1).cpu().numpy()
        for index, seg, depth in zip(batch["index"].tolist(), ids, depth_m):
            write_semseg(out_dir / "semseg" / f"{index}.png", seg)
            write_depth(out_dir / "depth" / f"{index}.png", depth)
            written.append(index)
    return written


# ------------------------------------------------------------------------------ data pre-flight
_MODES = {"rgb": ("RGB", "L"), "semseg": ("P", "L"), "depth": ("L",)}


def check_data_before_training(datasets: dict[str, Any]) -> None:
    """Fail before any training on what is cheap to find: a file whose header is no image of the expected
    mode, or a label whose size is not its rgb image's (headers only, every split); and any problem in the
    test split, decoded in full -- it is otherwise read only after the last epoch. Damage deeper inside a
    train or val file surfaces when it is first read, as a DatasetError naming the file."""
    from PIL import Image

    for name, dataset in datasets.items():
        modalities = ("rgb", "semseg", "depth") if dataset.has_labels else ("rgb",)
        for index in dataset.indices:
            sizes = {}
            for modality in modalities:
                path = dataset.path(modality, index)
                try:
                    with Image.open(path) as image:
                        sizes[modality], mode = image.size, image.mode
                except (OSError, SyntaxError, ValueError) as exc:
                    raise DatasetError(f"{modality} file {path} is not a readable image: {exc}") from None
                if mode not in _MODES[modality]:
                    raise DatasetError(f"{modality} file {path} has image mode {mode}; expected "
                                       f"{' or '.join(_MODES[modality])}")
            for modality, size in sizes.items():
                if size != sizes["rgb"]:
                    raise DatasetError(f"{dataset.path(modality, index)} is {size[0]}x{size[1]} but "
                                       f"{dataset.path('rgb', index)} is {sizes['rgb'][0]}x{sizes['rgb'][1]}")
    test = datasets["test"]
    problems, _ = check_split(test.root, test.split)
    if problems:
        more = f" (and {len(problems) - 3} more: python -m mtl.data.integrity {test.root})" if len(problems) > 3 else ""
        raise DatasetError("; ".join(problems[:3]) + more)


# --------------------------------------------------------------------------------- training
class StopRequested(Exception):
    """SIGTERM/SIGINT arrived; the loop checkpoints and exits."""


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
            "loss_sums": list(self.loss_sums), "loss_count": self.loss_count,
        }

    def check_finite(self) -> None:
        """Raise Diverged when a weight or buffer holds NaN/Inf: such a model must never become a checkpoint
        (a finite loss does not prove it: the step after it can still blow the weights up)."""
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise Diverged(f"non-finite values in {name} after step {self.position.step}")

    def save_last(self) -> None:
        self.check_finite()
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

    def train_epoch(self, loader: DataLoader, batches: int, progress: Progress, clock: "Clock") -> None:
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
                progress.update(p.step, p.epoch + 1, loss)
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


class Clock:
    """Training seconds, continuing across resumes."""

    def __init__(self, already: float):
        self.already, self.start = already, time.monotonic()

    def elapsed(self) -> float:
        return self.already + time.monotonic() - self.start


def _batches_per_epoch(dataset_len: int, cfg: Config) -> int:
    batches = dataset_len // cfg.batch_size
    if batches == 0:
        raise ValueError(f"training split has {dataset_len} images, fewer than batch_size {cfg.batch_size}")
    return min(batches, cfg.limit_train_batches) if cfg.limit_train_batches else batches


def train(cfg: Config, stop: StopSignals | None = None) -> dict[str, Any]:
    """Train (or resume, or skip if finished) the run in ``cfg.log_dir``; returns the final status.

    ``stop``: the stop signals received so far (``mtl-train`` installs them on its first line); the
    trainer takes them over once it is set up. RunLocked when another process owns the directory."""
    run = RunDirectory(cfg.log_dir)
    with run.exclusive():
        run.check_same_run(source_zip_differences(run.source_zip, cfg) if run.source_zip.exists() else [])
        if run.is_finished():
            return run.read_status()
        return _train_locked(cfg, run, stop or StopSignals())


def _train_locked(cfg: Config, run: RunDirectory, stop: StopSignals) -> dict[str, Any]:
    run.remove_stale_temporaries()
    atomic_write_text(run.config_path, cfg.to_yaml())
    if not run.source_zip.exists():
        atomic_write_bytes(run.source_zip, build_source_zip(cfg))
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed, cfg.deterministic)
    device = select_device(cfg.device)
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark

    previous = run.read_status()
    status = run.write_status(
        state="running", error=None, traceback=None, num_epochs=cfg.num_epochs, config_hash=cfg.config_hash(),
        code_version=code_version(), started_at=previous.get("started_at") or now_iso(), finished_at=None,
        pid=os.getpid(), host=socket.gethostname(), epoch=previous.get("epoch", 0), step=previous.get("step", 0),
        best=previous.get("best"), model=previous.get("model"), eta_s=None, elapsed_s=previous.get("elapsed_s", 0.0))

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
                      loss_fn=MultiTaskLoss(cfg, depth_unit), depth_unit=depth_unit, trace=LocalTrace(run.metrics), stop=stop,
                      wandb=WandbSink(cfg, run.path, run_id),
                      scaler=torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None)
    run.write_status(wandb_run_id=trainer.wandb.run_id)
    if run.last.exists():
        trainer.restore(torch.load(run.last, map_location=device, weights_only=False))
    # Points logged after the checkpoint -- or, without one, by an attempt killed before its first
    # checkpoint -- are logged again by the training that follows; kept, they would appear twice.
    trainer.trace.truncate_after(trainer.position.step)
    if status.get("model") is None:
        sample = datasets["val"][0]["image"]
        summary = model_summary(cfg, sample.shape[-2], sample.shape[-1])
        run.write_status(model={"params": summary["params"], "gflops": summary["gflops"],
                                "input": [int(sample.shape[-2]), int(sample.shape[-1])]})
        trainer.wandb.summary({"model/params": summary["params"], "model/gflops": summary["gflops"]})
    train_model = torch.compile(model) if cfg.compile else model
    trainer.model = train_model

    sampler = EpochSampler(len(datasets["train"]), cfg.seed)
    train_loader = make_loader(datasets["train"], cfg, train=True, sampler=sampler)
    val_loader = make_loader(datasets["val"], cfg, train=False)
    batches = _batches_per_epoch(len(datasets["train"]), cfg)
    progress = Progress(cfg.progress, cfg.num_epochs * batches, trainer.position.step)
    clock = Clock(trainer.position.elapsed_s)
    stop.install()  # from here on the loop checks them between steps
    try:
        if trainer.stop_signal is not None:  # arrived during set-up: checkpoint where we stand, train nothing
            raise StopRequested()
        p = trainer.position
        while p.epoch < cfg.num_epochs:
            sampler.set_epoch(p.epoch, skip_samples=p.batch_in_epoch * cfg.batch_size)
            trainer.train_epoch(train_loader, batches, progress, clock)
            trainer.check_finite()  # before a best.pt could be written from the validation below
            visualize = cfg.visualize_num_images if (trainer.wandb.run is not None and
                                                     (p.epoch + 1) % cfg.visualize_interval_epochs == 0) else 0
            point, panels, depth_values = evaluate(train_model, val_loader, trainer.loss_fn, depth_unit, device,
                                                   cfg, visualize)
            p.elapsed_s = clock.elapsed()
            point = {"step": p.step, "epoch": p.epoch + 1, "time": round(p.elapsed_s, 3), **point}
            trainer.trace.log(point)
            trainer.wandb.log(point)
            if not math.isfinite(point["val/loss"]):  # finite but huge weights can still predict NaN/Inf
                raise Diverged(f"non-finite validation loss ({point['val/loss']}) at step {p.step}, "
                               f"epoch {p.epoch + 1}")
            if panels:
                trainer.wandb.images(panels, depth_values, p.step)
            if math.isfinite(point["val/grader"]) and (p.best is None or point["val/grader"] > p.best["grader"]):
                p.best = {"step": p.step, "epoch": p.epoch + 1, "grader": point["val/grader"],
                          "iou": point["val/iou"], "si_logrmse": point["val/si_logrmse"]}
                # Hyperparameters only: paths (a home folder) must not travel in the grader archive.
                atomic_torch_save({"model": model.state_dict(), "config": cfg.hyperparameters(),
                                   "best": p.best}, run.best)
                trainer.wandb.summary({f"best/{k}": v for k, v in p.best.items()})
            progress.message(f"epoch {p.epoch + 1}/{cfg.num_epochs}: grader {point['val/grader']:.2f} "
                             f"IoU {point['val/iou']:.2f} SI-logRMSE {point['val/si_logrmse']:.2f}")
            scheduler.step()
            p.epoch += 1
            p.batch_in_epoch = 0
            trainer.save_last()
            run.write_status(epoch=p.epoch, step=p.step, best=p.best, elapsed_s=round(p.elapsed_s, 3),
                             eta_s=progress.eta_seconds())
            if trainer.stop_signal is not None:
                raise StopRequested()
        progress.close()
        _finish(cfg, run, datasets, model, depth_unit, device)
    except StopRequested:
        progress.close()
        trainer.position.elapsed_s = clock.elapsed()
        trainer.save_last()
        p = trainer.position
        trainer.wandb.finish(exit_code=143)
        return run.write_status(state="interrupted", error=f"stopped by signal {trainer.stop_signal}; "
                                f"checkpoint at step {p.step}", epoch=p.epoch, step=p.step, best=p.best)
    except Diverged as exc:
        progress.close()
        trainer.wandb.finish(exit_code=3)
        kept = trainer.checkpoint_step
        where = (f"last good checkpoint kept: {run.last} at step {kept}" if kept is not None
                 else "no checkpoint was written before it (a retry starts from the beginning)")
        return run.write_status(state="diverged", error=f"{exc}; {where}", diverged_step=trainer.position.step,
                                checkpoint_step=kept)
    except BaseException:
        progress.close()
        trainer.wandb.finish(exit_code=1)
        raise
    trainer.wandb.finish()
    return run.write_status(state="finished", finished_at=now_iso(), eta_s=0.0)


def _finish(cfg: Config, run: RunDirectory, datasets: dict, model: torch.nn.Module, depth_unit: DepthUnit,
            device: torch.device) -> None:
    """Predict the test split with the best checkpoint and pack submission.zip."""
    if not run.best.exists():
        raise RuntimeError("no validation point had a finite grader, so there is no best checkpoint to submit")
    best = torch.load(run.best, map_location=device, weights_only=False)
    model.load_state_dict(best["model"])
    test_loader = make_loader(datasets["test"], cfg, train=False)
    indices = predict(model, test_loader, depth_unit, device, cfg, run.predictions)
    write_submission(run.submission, predictions_dir=run.predictions, test_indices=sorted(indices),
                     checkpoint=run.best, checkpoint_name=run.path.name, source_zip=run.source_zip,
                     metrics_path=run.metrics)
