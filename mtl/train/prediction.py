"""Test-split prediction with the best checkpoint, and the submission.zip that packs it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mtl.config import Config
from mtl.data.loading import make_loader
from mtl.data.miniscapes import write_depth, write_semseg
from mtl.data.transforms import DepthUnit
from mtl.run.layout import prediction_path
from mtl.train.runtime import autocast
from mtl.train.submission import write_submission

if TYPE_CHECKING:
    from mtl.run.layout import RunDirectory


@torch.no_grad()
def predict(model: torch.nn.Module, loader, depth_unit: DepthUnit, device: torch.device, cfg: Config,
            out_dir: Path) -> list[int]:
    """Write test predictions in the MiniScapes encodings, of the tasks the run trains; returns the indices
    written."""
    model.eval()
    written = []
    for task in cfg.task_names:
        prediction_path(out_dir, task, 0).parent.mkdir(parents=True, exist_ok=True)
    for batch in loader:
        images = batch["image"].to(device)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(cfg, device):
            outputs = model(images)
        indices = batch["index"].tolist()
        if "semseg" in outputs:
            ids = outputs["semseg"].argmax(1).to(torch.uint8).cpu().numpy()
            for index, seg in zip(indices, ids):
                write_semseg(prediction_path(out_dir, "semseg", index), seg)
        if "depth" in outputs:
            depth_m = depth_unit.decode(outputs["depth"].float()).squeeze(1).cpu().numpy()
            for index, depth in zip(indices, depth_m):
                write_depth(prediction_path(out_dir, "depth", index), depth)
        written += indices
    return written


def predict_and_pack(cfg: Config, run: RunDirectory, datasets: dict[str, Any], model: torch.nn.Module,
                     depth_unit: DepthUnit, device: torch.device) -> None:
    """Predict the test split with the best checkpoint (loaded into ``model``) and pack submission.zip."""
    if not run.best.exists():
        raise RuntimeError("no validation point had a finite grader (a single-task run: its task's metric), so "
                           "there is no best checkpoint to submit")
    best = torch.load(run.best, map_location=device, weights_only=False)
    model.load_state_dict(best["model"])
    test_loader = make_loader(datasets["test"], cfg, train=False)
    indices = predict(model, test_loader, depth_unit, device, cfg, run.predictions)
    write_submission(run.submission, predictions_dir=run.predictions, test_indices=sorted(indices),
                     checkpoint=run.best, checkpoint_name=run.path.name, source_zip=run.source_zip,
                     metrics_path=run.metrics, tasks=cfg.task_names)
