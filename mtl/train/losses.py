"""Task losses: cross-entropy (ignore 255) for segmentation, L2/L1 on valid pixels for depth, and each task's
term of the loss a step minimises (its loss times ``loss_weight_<task>``, deep supervision included), which
the run's weighting method (:mod:`mtl.train.weighting`) combines."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtl.config import Config
from mtl.data.miniscapes import IGNORE_INDEX
from mtl.data.transforms import DepthUnit


def semseg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


def depth_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kind: str = "l2") -> torch.Tensor:
    """Mean error over valid pixels; a batch without valid depth contributes 0 (but keeps the graph)."""
    error = (pred - target).square() if kind == "l2" else (pred - target).abs()
    valid = valid.to(error.dtype)
    return (error * valid).sum() / valid.sum().clamp_min(1.0)


class MultiTaskLoss:
    """The losses of the tasks a run trains; ``<task>_initial`` outputs (deep supervision) get
    ``loss_weight_initial``."""

    def __init__(self, cfg: Config, depth_unit: DepthUnit):
        self.tasks = cfg.task_names
        self.weights = {"semseg": cfg.loss_weight_semseg, "depth": cfg.loss_weight_depth}
        self.weight_initial = cfg.loss_weight_initial
        self.depth_kind = cfg.depth_loss
        self.depth_unit = depth_unit

    def task_losses(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                    suffix: str = "") -> dict[str, torch.Tensor]:
        losses = {}
        if "semseg" in self.tasks:
            losses["semseg"] = semseg_loss(outputs["semseg" + suffix].float(), batch["semseg"])
        if "depth" in self.tasks:
            depth_m = batch["depth"]
            target = self.depth_unit.encode(depth_m)
            losses["depth"] = depth_loss(outputs["depth" + suffix].float(), target, depth_m > 0, self.depth_kind)
        return losses

    def terms(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(each task's term for the weighting method: ``loss_weight_<task>`` x (its loss + ``loss_weight_initial``
        x its initial-prediction loss), the unweighted final-prediction losses by task)."""
        losses = self.task_losses(outputs, batch)
        terms = {t: self.weights[t] * losses[t] for t in losses}
        if "semseg_initial" in outputs:
            initial = self.task_losses(outputs, batch, suffix="_initial")
            terms = {t: terms[t] + self.weight_initial * (self.weights[t] * initial[t]) for t in terms}
        return terms, losses

    def __call__(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Returns (the sum of the task terms, unweighted final-prediction losses by task)."""
        terms, losses = self.terms(outputs, batch)
        total: torch.Tensor | float = sum(terms.values())
        assert isinstance(total, torch.Tensor)  # a sum over the tasks' losses, never the empty sum 0
        return total, losses
