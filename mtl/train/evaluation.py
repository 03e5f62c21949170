"""Validation metrics of a model over a loader: the ``val/...`` point the training loop logs."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from mtl.config import Config
from mtl.data.transforms import DepthUnit
from mtl.train.losses import MultiTaskLoss
from mtl.train.metrics import MetricAccumulator
from mtl.train.runtime import autocast, to_device


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable[dict], loss_fn: MultiTaskLoss, depth_unit: DepthUnit,
             device: torch.device, cfg: Config) -> dict[str, Any]:
    """Validation metrics and losses, keyed ``val/grader``, ``val/iou``, ``val/si_logrmse``, ``val/loss``...

    A single-task run (``cfg.tasks``) has its own task's metric and loss only, and ``val/grader`` None: the
    grader is not defined for it (the key stays: it marks a validation point in the trace)."""
    model.eval()
    tasks = cfg.task_names
    metrics = MetricAccumulator(device)
    loss_sums = torch.zeros(len(tasks), dtype=torch.float64, device=device)
    samples = 0
    for batch in loader:
        batch = to_device(batch, device, cfg.channels_last)
        with autocast(cfg, device):
            outputs = model(batch["image"])
        _, losses = loss_fn(outputs, batch)
        size = batch["image"].shape[0]
        loss_sums += torch.stack([losses[t].double() for t in tasks]) * size
        samples += size
        if "semseg" in tasks:
            metrics.update_semseg(outputs["semseg"].max(dim=1).indices, batch["semseg"])
        if "depth" in tasks:
            metrics.update_depth(depth_unit.decode(outputs["depth"].float()), batch["depth"])
    result = metrics.compute()
    task_losses = dict(zip(tasks, (loss_sums / max(samples, 1)).tolist()))
    if len(tasks) == 1:
        return _single_task_point(tasks[0], result, task_losses[tasks[0]])
    point = {"val/grader": result.pop("grader"), "val/iou": result.pop("iou"),
             "val/si_logrmse": result.pop("si_logrmse"), "val/loss": task_losses["semseg"] + task_losses["depth"],
             "val/loss_semseg": task_losses["semseg"], "val/loss_depth": task_losses["depth"]}
    point.update({f"val/{k}": v for k, v in result.items()})
    return point


def _single_task_point(task: str, result: dict[str, float], loss: float) -> dict[str, Any]:
    """The validation point of a run that trains ``task`` alone: its metric and loss, no grader."""
    point: dict[str, Any] = {"val/grader": None}
    if task == "semseg":
        point["val/iou"] = result["iou"]
    else:
        point["val/si_logrmse"] = result["si_logrmse"]
    point.update({"val/loss": loss, f"val/loss_{task}": loss})
    if task == "semseg":
        point.update({f"val/{k}": v for k, v in result.items() if k.startswith("iou_class/")})
    return point
