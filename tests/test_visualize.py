"""The W&B validation panels and the shared class/depth colouring (mtl.train.visualize)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mtl.config import make_config
from mtl.data.miniscapes import IGNORE_INDEX, PALETTE
from mtl.data.transforms import DepthUnit
from mtl.train.runtime import rng_states, to_device
from mtl.train.visualize import colorize, depth_gray, validation_panels, visual_panels

DEPTH_UNIT = DepthUnit("meters", 27.0727, 29.1264)
CFG = make_config({"device": "cpu", "wandb_mode": "disabled", "progress": "none"})


class TinyMultiTask(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.semseg = torch.nn.Conv2d(3, 19, 3, padding=1)
        self.depth = torch.nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"semseg": self.semseg(image), "depth": self.depth(image)}


def samples(count: int = 7, size: int = 16) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    items = []
    for index in range(count):
        semseg = torch.randint(0, 19, (size, size), generator=generator)
        semseg[:2] = IGNORE_INDEX
        depth = 4.0 + 100.0 * torch.rand(1, size, size, generator=generator)
        depth[:, :3] = 0.0
        items.append({"index": index, "image": torch.randn(3, size, size, generator=generator),
                      "semseg": semseg, "depth": depth})
    return items


def panels_from_loader(model, loader, count):
    """What evaluation used to collect while iterating the loader: the reference for validation_panels."""
    panels, depths = [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            if len(panels) >= count:
                break
            batch = to_device(batch, torch.device("cpu"), False)
            outputs = model(batch["image"])
            panels += visual_panels(batch, outputs, DEPTH_UNIT, count - len(panels))
            depths.append(DEPTH_UNIT.decode(outputs["depth"].float())[batch["depth"] > 0].numpy())
    return panels, np.concatenate(depths)


@pytest.mark.parametrize("count", [1, 3, 4, 7, 20])
def test_validation_panels_are_those_of_the_first_loader_batches(count):
    torch.manual_seed(0)
    model = TinyMultiTask()
    loader = DataLoader(samples(), batch_size=3, shuffle=False)
    panels, depths = validation_panels(model, loader, DEPTH_UNIT, torch.device("cpu"), CFG, count)
    expected_panels, expected_depths = panels_from_loader(model, loader, count)
    assert len(panels) == min(count, 7)
    assert all(np.array_equal(a, b) for a, b in zip(panels, expected_panels, strict=True))
    assert np.array_equal(depths, expected_depths)
    assert panels[0].shape == (16, 5 * 16, 3) and panels[0].dtype == np.uint8


def test_validation_panels_leave_every_random_generator_as_it_was():
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    model = TinyMultiTask()

    def draw_random_numbers(*_):  # a model whose forward pass uses the global generators
        torch.rand(1), np.random.rand(), random.random()

    model.depth.register_forward_hook(draw_random_numbers)
    before = rng_states()
    validation_panels(model, DataLoader(samples(), batch_size=2), DEPTH_UNIT, torch.device("cpu"), CFG, 4)
    after = rng_states()
    assert torch.equal(before["torch"], after["torch"])
    assert all(np.array_equal(a, b) for a, b in zip(before["numpy"][1:3], after["numpy"][1:3]))
    assert before["python"] == after["python"]


def test_validation_panels_refuse_a_shuffling_loader():
    loader = DataLoader(samples(), batch_size=2, shuffle=True)
    with pytest.raises(ValueError, match="RandomSampler"):
        validation_panels(TinyMultiTask(), loader, DEPTH_UNIT, torch.device("cpu"), CFG, 2)


def test_no_panels_asked_gives_no_panels_and_no_depth_sample():
    loader = DataLoader(samples(), batch_size=2)
    assert validation_panels(TinyMultiTask(), loader, DEPTH_UNIT, torch.device("cpu"), CFG, 0) == ([], None)


def test_colorize_uses_the_palette_and_paints_ignore_black():
    ids = np.array([[0, 18], [IGNORE_INDEX, 5]], dtype=np.int64)
    image = colorize(ids)
    assert image.dtype == np.uint8 and image.shape == (2, 2, 3)
    assert tuple(image[0, 0]) == tuple(PALETTE[0]) and tuple(image[0, 1]) == tuple(PALETTE[18])
    assert tuple(image[1, 0]) == (0, 0, 0)


def test_depth_gray_is_brighter_near_and_black_where_invalid():
    gray = depth_gray(np.array([[0.0, 2.0, 50.0]], dtype=np.float32))
    assert gray.shape == (1, 3, 3) and (gray[0, :, 0] == gray[0, :, 1]).all()
    assert gray[0, 0, 0] == 0 and gray[0, 1, 0] > gray[0, 2, 0] > 0


def test_a_single_task_models_panels_show_the_input_and_its_task_alone():
    batch = DataLoader(samples(2), batch_size=2).__iter__().__next__()
    size = batch["image"].shape[-1]
    depth_only = {"depth": torch.zeros(2, 1, size, size)}
    panels = visual_panels(batch, depth_only, DEPTH_UNIT, 2)
    assert [p.shape for p in panels] == [(size, 3 * size, 3)] * 2  # input | predicted depth | true depth
    semseg_only = {"semseg": torch.zeros(2, 19, size, size)}
    assert visual_panels(batch, semseg_only, DEPTH_UNIT, 1)[0].shape == (size, 3 * size, 3)
