"""How predictions and labels look: class colours, depth shading, and the validation panels sent to W&B.

Shared by training (W&B images) and the report's figures, so both colour classes and depth alike. Importing
it sets up nothing (no plotting backend, no device work).
"""

from __future__ import annotations

from collections.abc import Sized
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, SequentialSampler

from mtl.data.miniscapes import DEPTH_MAX_M, DEPTH_MIN_M, IGNORE_INDEX, PALETTE
from mtl.train.runtime import autocast, rng_preserved, to_device

if TYPE_CHECKING:
    from mtl.config import Config
    from mtl.data.transforms import DepthUnit

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
# Depth is shown as disparity (1/depth) on this fixed scale, so near detail is visible and images compare.
DISPARITY_MIN, DISPARITY_MAX = 1.0 / DEPTH_MAX_M, 1.0 / DEPTH_MIN_M


def colorize(ids: np.ndarray) -> np.ndarray:
    """Class ids (HxW) as Cityscapes colours (HxWx3 uint8); ignore (255) and unknown ids black."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(PALETTE)] = np.array(PALETTE, np.uint8)
    table[IGNORE_INDEX] = 0
    return table[ids.astype(np.uint8)]


def disparity(depth_m: np.ndarray) -> np.ndarray:
    """1/depth of depths clipped to the dataset's range, in [DISPARITY_MIN, DISPARITY_MAX]."""
    return 1.0 / np.clip(depth_m, DEPTH_MIN_M, DEPTH_MAX_M)


def depth_gray(depth_m: np.ndarray) -> np.ndarray:
    """Depth (HxW metres) as an HxWx3 grey image: near bright, far dark, invalid (<= 0) black."""
    scaled = (disparity(depth_m) - DISPARITY_MIN) / (DISPARITY_MAX - DISPARITY_MIN)
    gray = (np.sqrt(scaled) * 255).astype(np.uint8)
    gray[depth_m <= 0] = 0
    return np.repeat(gray[..., None], 3, axis=2)


def visual_panels(batch: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor], depth_unit: DepthUnit,
                  count: int) -> list[np.ndarray]:
    """input | predicted seg | true seg | predicted depth | true depth, one row image per sample (a
    single-task model's row: the input and its task's pair)."""
    panels = []
    for i in range(min(count, batch["image"].shape[0])):
        image = (batch["image"][i].float().cpu() * IMAGENET_STD + IMAGENET_MEAN).clamp(0, 1)
        row = [(image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)]
        if "semseg" in outputs:
            pred_ids = outputs["semseg"][i].argmax(0).cpu().numpy()
            row += [colorize(pred_ids), colorize(batch["semseg"][i].cpu().numpy())]
        if "depth" in outputs:
            pred_depth = depth_unit.decode(outputs["depth"][i].float()).squeeze(0).cpu().numpy()
            row += [depth_gray(pred_depth), depth_gray(batch["depth"][i].squeeze(0).cpu().numpy())]
        panels.append(np.concatenate(row, axis=1))
    return panels


def validation_panels(model: torch.nn.Module, loader: DataLoader, depth_unit: DepthUnit, device: torch.device,
                      cfg: Config, count: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Panels of the first ``count`` validation images, and the predicted depths (m) at the valid pixels of
    the batches holding them (W&B's depth histogram).

    The batches are those the validation loader yields first, collated from its dataset here rather than
    drawn from the loader: no worker start-up, and no random-number generator moves (a DataLoader
    iterator draws its base seed from torch's), so training continues exactly as without this call.
    """
    if not isinstance(loader.sampler, SequentialSampler):
        raise ValueError(f"validation_panels needs a loader that reads its dataset in order; this one samples "
                         f"with {type(loader.sampler).__name__}")
    dataset, batch_size = loader.dataset, loader.batch_size
    if not isinstance(dataset, Sized) or batch_size is None:
        raise ValueError("validation_panels needs a loader with a batch size over a dataset with a length")
    panels: list[np.ndarray] = []
    depth_sample: list[np.ndarray] = []
    model.eval()
    with torch.no_grad(), rng_preserved():
        for start in range(0, len(dataset), batch_size):
            if len(panels) >= count:
                break
            samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = to_device(loader.collate_fn(samples), device, cfg.channels_last)
            with autocast(cfg, device):
                outputs = model(batch["image"])
            panels += visual_panels(batch, outputs, depth_unit, count - len(panels))
            if "depth" in outputs:
                pred_depth_m = depth_unit.decode(outputs["depth"].float())
                depth_sample.append(pred_depth_m[batch["depth"] > 0].cpu().numpy())
    return panels, (np.concatenate(depth_sample) if depth_sample else None)
