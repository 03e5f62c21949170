"""IoU, SI-logRMSE and the grader, exactly as docs/DESIGN.md §3 defines them.

Everything accumulates on the device in float64 and int64; the host sees numbers once per epoch
(``compute``), so validation does not synchronise per batch.
"""

from __future__ import annotations

import math

import torch

from mtl.data.miniscapes import CLASS_NAMES, DEPTH_MAX_M, DEPTH_MIN_M, IGNORE_INDEX, NUM_CLASSES

SI_LOG_EPS_M = 0.01  # both depths clamped to >= 1 cm before the log


def grader_score(iou: float, si_logrmse: float) -> float:
    return max(iou - 50.0, 0.0) + max(50.0 - si_logrmse, 0.0)


class MetricAccumulator:
    """Confusion matrix for IoU and per-image SI-logRMSE sums, kept on ``device``."""

    def __init__(self, device: torch.device | str = "cpu", num_classes: int = NUM_CLASSES):
        self.num_classes = num_classes
        self.confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
        self.si_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.si_images = torch.zeros((), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update_semseg(self, pred_ids: torch.Tensor, gt_ids: torch.Tensor) -> None:
        """``pred_ids`` and ``gt_ids``: integer class maps of the same shape; gt 255 is ignored."""
        gt = gt_ids.reshape(-1).long()
        pred = pred_ids.reshape(-1).long()
        keep = gt != IGNORE_INDEX
        gt, pred = gt[keep], pred[keep]
        self.confusion += torch.bincount(gt * self.num_classes + pred, minlength=self.num_classes**2)[
            : self.num_classes**2
        ]

    @torch.no_grad()
    def update_depth(self, pred_m: torch.Tensor, gt_m: torch.Tensor) -> None:
        """``pred_m``, ``gt_m``: ``[B, 1, H, W]`` or ``[B, H, W]`` metres; gt 0 marks an invalid pixel."""
        batch = gt_m.shape[0]
        gt = gt_m.reshape(batch, -1).double()
        pred = pred_m.reshape(batch, -1).double().clamp(DEPTH_MIN_M, DEPTH_MAX_M)
        valid = gt > 0
        diff = torch.where(valid, gt.clamp_min(SI_LOG_EPS_M).log() - pred.clamp_min(SI_LOG_EPS_M).log(), 0.0)
        n = valid.sum(dim=1)
        has_pixels = n > 0
        n_safe = n.clamp_min(1).double()
        variance = (diff.square().sum(dim=1) / n_safe) - diff.sum(dim=1).square() / n_safe.square()
        per_image = 100.0 * variance.clamp_min(0.0).sqrt()
        self.si_sum += per_image[has_pixels].sum()
        self.si_images += has_pixels.sum()

    def update(self, semseg_logits: torch.Tensor, semseg_gt: torch.Tensor, depth_pred_m: torch.Tensor,
               depth_gt_m: torch.Tensor) -> None:
        # max(...).indices gives argmax's ids (first maximum on ties) at a fraction of its cost on CPU.
        self.update_semseg(semseg_logits.max(dim=1).indices, semseg_gt)
        self.update_depth(depth_pred_m, depth_gt_m)

    def compute(self) -> dict[str, float]:
        """Metrics as Python floats, plus ``iou_class/<name>`` for every class."""
        confusion = self.confusion.double().reshape(self.num_classes, self.num_classes).cpu()
        tp = confusion.diag()
        fp = confusion.sum(dim=0) - tp
        fn = confusion.sum(dim=1) - tp
        per_class = 100.0 * tp / (tp + fp + fn).clamp_min(1e-12)
        iou = float(per_class.mean())
        images = int(self.si_images)
        si = float(self.si_sum) / images if images else math.nan
        result = {"iou": iou, "si_logrmse": si, "grader": grader_score(iou, si) if images else math.nan}
        names = CLASS_NAMES if self.num_classes == NUM_CLASSES else [str(i) for i in range(self.num_classes)]
        for name, value in zip(names, per_class.tolist()):
            result[f"iou_class/{name}"] = value
        return result
