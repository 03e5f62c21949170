"""The training loop of one run: optimizer steps, validation, checkpoints, and the hooks that record them.

:meth:`Trainer.fit` runs the epochs still to do. What the loop computes (steps, losses, validation points,
the checkpoint in last.pt) lives here; what it records elsewhere -- the trace, W&B, progress, best.pt, the
status and the summary -- are :class:`Hook` objects (:mod:`mtl.train.hooks`), called in the order of the
trainer's list. At the end of an epoch last.pt is written before any hook runs (:meth:`Trainer.end_epoch`):
a kill after it leaves last.pt holding the validated model and its best point, from which the next start
rewrites best.pt (:mod:`mtl.run.recovery`); never a best.pt ahead of last.pt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader

from mtl.config import Config
from mtl.data.loading import EpochSampler
from mtl.data.transforms import DepthUnit
from mtl.run import io as atomic
from mtl.run.best import better_point, run_rank_metric
from mtl.run.layout import RunDirectory
from mtl.run.model import ValidationPoint
from mtl.run.recovery import best_of_checkpoint
from mtl.run.stopping import StopSignals
from mtl.run.trace import LocalTrace
from mtl.train.evaluation import evaluate
from mtl.train.losses import MultiTaskLoss
from mtl.train.runtime import Clock, autocast, restore_rng_states, rng_states, to_device
from mtl.train.weighting import LossWeighting, build_weighting, unscaled

TRAIN_LOG_INTERVAL = 10  # optimizer steps between training points (and non-finite-loss checks)


class Diverged(RuntimeError):
    """A non-finite loss: the run stops, keeping the last good checkpoint."""


class StopRequested(Exception):
    """A stop signal (``mtl.run.stopping.STOP_SIGNALS``) arrived; the loop checkpoints and exits."""


class PauseReached(Exception):
    """The epoch this attempt was asked to stop after (``stop_after_epoch``, a racing rung) is done and
    checkpointed; the run pauses there."""


def first_non_finite(state: dict[str, torch.Tensor]) -> Optional[str]:
    """The name of the first floating-point tensor of ``state`` holding NaN or Inf, else None.

    One reduction a tensor and one host sync for all (a GPU model has hundreds of tensors): a float64 sum is
    finite exactly when every value is, since float32/16 values cannot overflow it; a sum that still overflows
    (float64 values near their limit) is checked value by value."""
    named = [(name, tensor) for name, tensor in state.items() if tensor.is_floating_point()]
    if not named:
        return None
    sums = torch.stack([tensor.sum(dtype=torch.float64) for _, tensor in named])
    for index in torch.nonzero(~torch.isfinite(sums)).flatten().tolist():
        name, tensor = named[int(index)]
        if not bool(torch.isfinite(tensor).all()):
            return name
    return None


@dataclass
class Position:
    """Where training stands: ``epoch`` in progress (0-based) and batches of it already done."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    elapsed_s: float = 0.0
    best: Optional[ValidationPoint] = None


class Hook:
    """Something the loop tells what happened; each method is a no-op unless overridden."""

    def after_step(self, trainer: Trainer) -> None:
        """After each optimizer step."""

    def after_train_point(self, trainer: Trainer, point: dict[str, Any]) -> None:
        """A training point (mean losses since the last one, learning rate) every ``TRAIN_LOG_INTERVAL`` steps."""

    def after_validation_point(self, trainer: Trainer, point: dict[str, Any]) -> None:
        """A validation point, before it is checked for divergence (a NaN point is recorded too)."""

    def after_epoch(self, trainer: Trainer, point: dict[str, Any], improved: bool) -> None:
        """The epoch is closed: schedule stepped, last.pt written; ``improved``: ``point`` is the new best."""


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
    batches: int  # optimizer steps per epoch
    hooks: list[Hook] = field(default_factory=list)
    position: Position = field(default_factory=Position)
    stop: StopSignals = field(default_factory=StopSignals)
    scaler: Optional[torch.amp.GradScaler] = None
    clock: Clock = field(default_factory=lambda: Clock(0.0))  # training time; fit starts it from the checkpoint's
    # Training losses summed since the last training point (total, then each task's) and their count. They
    # travel in the checkpoint, so a point logged after a mid-interval resume averages the same steps.
    loss_sums: Optional[torch.Tensor] = None
    loss_count: int = 0
    checkpoint_step: Optional[int] = None  # step of the checkpoint in last.pt (None: none yet)
    dataset: Optional[str] = None  # fingerprint of the dataset's files, checked on resume
    # How a step combines the task losses (cfg.loss_weighting); default: built here, when it learns nothing.
    weighting: Optional[LossWeighting] = None

    def __post_init__(self) -> None:
        if self.loss_sums is None:
            self.loss_sums = torch.zeros(1 + len(self.cfg.task_names), dtype=torch.float64, device=self.device)
        if self.weighting is None:
            self.weighting = build_weighting(self.cfg, self.device)
        held = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        if any(id(p) not in held for p in self.weighting.parameters()):
            raise ValueError(f"loss_weighting {self.cfg.loss_weighting!r} learns parameters the optimizer does not "
                             "hold: build it with build_optimizer(cfg, model, weighting.parameters())")

    @property
    def combiner(self) -> LossWeighting:
        """The run's weighting method (set by __post_init__)."""
        assert self.weighting is not None
        return self.weighting

    @property
    def stop_signal(self) -> Optional[int]:
        """The latest stop signal received (also while the run was being set up), None if none."""
        return self.stop.last

    @property
    def module(self) -> torch.nn.Module:
        """The model itself, also while ``model`` is its torch.compile wrapper (whose state dict keys carry an
        ``_orig_mod.`` prefix that the plain model, which resume and prediction load into, does not know)."""
        return getattr(self.model, "_orig_mod", self.model)

    # ------------------------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        p = self.position
        assert self.loss_sums is not None
        return {
            "model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": p.epoch, "batch_in_epoch": p.batch_in_epoch, "step": p.step, "elapsed_s": p.elapsed_s,
            "best": p.best.model_dump() if p.best is not None else None, "rng": rng_states(),
            "config": self.cfg.hyperparameters(), "loss_sums": self.loss_sums.tolist(), "loss_count": self.loss_count,
            "dataset": self.dataset, "weighting": self.combiner.state_dict(),
        }

    def check_finite(self) -> None:
        """Raise Diverged when a weight or buffer holds NaN/Inf: such a model must never become a checkpoint
        (a finite loss does not prove it: the step after it can still blow the weights up)."""
        name = first_non_finite(self.model.state_dict())
        if name is not None:
            raise Diverged(f"non-finite values in {name} after step {self.position.step}")

    def save_last(self) -> None:
        self.check_finite()
        self.trace.sync()  # the points up to this checkpoint must survive a crash that keeps the checkpoint
        atomic.atomic_torch_save(self.checkpoint_state(), self.run.last)
        self.checkpoint_step = self.position.step

    def restore(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.position = Position(epoch=state["epoch"], batch_in_epoch=state["batch_in_epoch"], step=state["step"],
                                 elapsed_s=state["elapsed_s"], best=best_of_checkpoint(state))
        self.loss_sums = torch.tensor(state.get("loss_sums", [0.0] * (1 + len(self.cfg.task_names))),
                                      dtype=torch.float64, device=self.device)
        self.loss_count = state.get("loss_count", 0)
        self.combiner.load_state_dict(state.get("weighting"), str(self.run.last))
        self.checkpoint_step = self.position.step
        restore_rng_states(state["rng"])

    # ------------------------------------------------------------------------------------ the loop
    def fit(self, train_loader: DataLoader[Any], val_loader: DataLoader[Any], sampler: EpochSampler) -> None:
        """The epochs still to do; StopRequested when a stop signal arrives, PauseReached after the epoch to stop
        after, Diverged on a non-finite loss."""
        cfg, p = self.cfg, self.position
        self.clock = Clock(p.elapsed_s)
        if self.stop_signal is not None:  # arrived during set-up: checkpoint where we stand, train nothing
            raise StopRequested()
        while p.epoch < cfg.num_epochs:
            if self.pause_due():
                raise PauseReached()
            sampler.set_epoch(p.epoch, skip_samples=p.batch_in_epoch * cfg.batch_size)
            self.train_epoch(train_loader)
            self.check_finite()  # before a best.pt could be written from the validation below
            self.end_epoch(val_loader)
            if self.stop_signal is not None:
                raise StopRequested()

    def pause_due(self) -> bool:
        """Whether the epoch to stop after is done (and the run has epochs left): a whole epoch, checkpointed."""
        stop, p = self.cfg.stop_after_epoch, self.position
        return bool(stop) and p.epoch >= stop and p.batch_in_epoch == 0 and p.epoch < self.cfg.num_epochs

    def train_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with autocast(self.cfg, self.device):
            outputs = self.model(batch["image"])
        terms, losses = self.loss_fn.terms(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            total = self.combiner.backward(terms, self.model, self.scaler.scale)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            total = self.combiner.backward(terms, self.model, unscaled)
            self.optimizer.step()
        self.combiner.observe(terms)
        return total, {k: v.detach() for k, v in losses.items()}

    def train_epoch(self, loader: DataLoader[Any]) -> None:
        cfg, p, sums = self.cfg, self.position, self.loss_sums
        assert sums is not None
        self.model.train()
        for batch in loader:
            if p.batch_in_epoch >= self.batches:
                break
            batch = to_device(batch, self.device, cfg.channels_last)
            total, losses = self.train_step(batch)
            sums += torch.stack([total.double(), *(losses[t].double() for t in cfg.task_names)])
            self.loss_count += 1
            p.batch_in_epoch += 1
            p.step += 1
            p.elapsed_s = self.clock.elapsed()
            if p.step % TRAIN_LOG_INTERVAL == 0 or p.batch_in_epoch == self.batches:
                self._train_point(sums)
            for hook in self.hooks:
                hook.after_step(self)
            if self.stop_signal is not None:
                raise StopRequested()

    def _train_point(self, sums: torch.Tensor) -> None:
        p = self.position
        loss, *task_losses = (sums / self.loss_count).tolist()
        if not math.isfinite(loss):
            raise Diverged(f"non-finite training loss ({loss}) at step {p.step}, epoch {p.epoch + 1}")
        point = {"step": p.step, "epoch": p.epoch + 1, "time": round(p.elapsed_s, 3), "train/loss": loss,
                 **{f"train/loss_{t}": value for t, value in zip(self.cfg.task_names, task_losses)},
                 "train/lr": self.optimizer.param_groups[0]["lr"], **self.combiner.log_point()}
        for hook in self.hooks:
            hook.after_train_point(self, point)
        sums.zero_()
        self.loss_count = 0

    def end_epoch(self, loader: DataLoader[Any]) -> None:
        """Validate, step the schedule, write last.pt, then let the hooks record the epoch (best.pt among them).

        The order is the crash-safety rule of docs/DESIGN.md §4.4: last.pt first, then best.pt,
        then status and summary, each write atomic."""
        cfg, p = self.cfg, self.position
        point = evaluate(self.model, loader, self.loss_fn, self.depth_unit, self.device, cfg)
        p.elapsed_s = self.clock.elapsed()
        point = {"step": p.step, "epoch": p.epoch + 1, "time": round(p.elapsed_s, 3), **point}
        for hook in self.hooks:
            hook.after_validation_point(self, point)
        if not math.isfinite(point["val/loss"]):  # finite but huge weights can still predict NaN/Inf
            raise Diverged(f"non-finite validation loss ({point['val/loss']}) at step {p.step}, "
                           f"epoch {p.epoch + 1}")
        improved = better_point(point, p.best, *run_rank_metric(cfg.tasks))
        if improved:
            p.best = ValidationPoint.of(point)
        self.scheduler.step()
        self.combiner.end_epoch()
        p.epoch += 1
        p.batch_in_epoch = 0
        self.save_last()
        for hook in self.hooks:
            hook.after_epoch(self, point, improved)
