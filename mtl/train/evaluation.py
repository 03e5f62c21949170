"""Validation metrics of a model over a loader: the ``val/...`` point the training loop logs."""

from __future__ import annotations

from typing import Iterable

import torch

from mtl.config import Config
from mtl.data.transforms import DepthUnit
from mtl.train.losses import MultiTaskLoss
from mtl.train.metrics import MetricAccumulator
from mtl.train.runtime import autocast, to_device


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable[dict], loss_fn: MultiTaskLoss, depth_unit: DepthUnit,
             device: torch.device, cfg: Config) -> dict[str, float]:
    """Validation metrics and losses, keyed ``val/grader``, ``val/iou``, ``val/si_logrmse``, ``val/loss``..."""
    model.eval()
    metrics = MetricAccumulator(device)
    loss_sums = torch.zeros(2, dtype=torch.float64, device=device)
    samples = 0
    for batch in loader:
        batch = to_device(batch, device, cfg.channels_last)
        with autocast(cfg, device):
            outputs = model(batch["image"])
        _, losses = loss_fn(outputs, batch)
        size = batch["image"].shape[0]
        loss_sums += torch.stack([losses["semseg"].double(), losses["depth"].double()]) * size
        samples += size
        metrics.update(outputs["semseg"], batch["semseg"], depth_unit.decode(outputs["depth"].float()), batch["depth"])
    result = metrics.compute()
    loss_semseg, loss_depth = (loss_sums / max(samples, 1)).tolist()
    point = {"val/grader": result.pop("grader"), "val/iou": result.pop("iou"),
             "val/si_logrmse": result.pop("si_logrmse"), "val/loss": loss_semseg + loss_depth,
             "val/loss_semseg": loss_semseg, "val/loss_depth": loss_depth}
    point.update({f"val/{k}": v for k, v in result.items()})
    return point
