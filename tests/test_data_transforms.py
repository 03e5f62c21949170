"""Joint augmentation keeps image, semseg and depth aligned; evaluation crop; depth units."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl.config import make_config
from mtl.data.miniscapes import IGNORE_INDEX, PALETTE
from mtl.data.transforms import (
    DepthUnit,
    EvalTransform,
    TrainTransform,
    build_eval_transform,
    build_train_transform,
    denormalize_image,
    normalize_image,
)

PALETTE_T = torch.tensor(PALETTE, dtype=torch.float32)


def coded_sample(height: int = 96, width: int = 128, block: int = 12, seed: int = 0) -> dict:
    """Blocks of random classes; the image colour is the class colour and depth is 5 + 10 * class."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 19, (height // block + 1, width // block + 1))
    ids = np.kron(blocks, np.ones((block, block), np.int64))[:height, :width]
    semseg = torch.from_numpy(ids)
    image = PALETTE_T[semseg].permute(2, 0, 1).round().to(torch.uint8)
    depth = (5.0 + 10.0 * semseg.float()).unsqueeze(0)
    return {"index": 0, "image": image, "semseg": semseg, "depth": depth}


def nearest_class(image: torch.Tensor) -> torch.Tensor:
    """Class whose colour is nearest to each pixel of a normalised 3xHxW image."""
    rgb = denormalize_image(image).float().permute(1, 2, 0)
    return torch.cdist(rgb.reshape(-1, 3), PALETTE_T).argmin(1).view(rgb.shape[:2])


def interior(semseg: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Pixels whose whole (2r+1)^2 neighbourhood has one label (away from region borders)."""
    labels = semseg.float()[None, None]
    high = F.max_pool2d(labels, 2 * radius + 1, 1, radius)
    low = -F.max_pool2d(-labels, 2 * radius + 1, 1, radius)
    core = ((high == low)[0, 0]) & (semseg != IGNORE_INDEX)
    # The crop's own border: its neighbourhood (and the bilinear one, next to the image edge) is unknown.
    core[:radius], core[-radius:], core[:, :radius], core[:, -radius:] = False, False, False, False
    return core


def source_inside(transform: TrainTransform, seed: int, height: int, width: int, margin: float) -> torch.Tensor:
    """For each crop pixel: +1 if its source point is inside the image by > margin px, -1 if outside by > margin."""
    matrix, *_ = transform.sample_warp(height, width, torch.Generator().manual_seed(seed))
    centres = torch.arange(transform.crop_size, dtype=torch.float64) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ torch.linalg.inv(matrix).T
    sx, sy = points[..., 0] / points[..., 2], points[..., 1] / points[..., 2]
    distance_inside = torch.minimum(torch.minimum(sx, width - sx), torch.minimum(sy, height - sy))
    result = torch.zeros_like(distance_inside, dtype=torch.int64)
    result[distance_inside > margin] = 1
    result[distance_inside < -margin] = -1
    return result


STRONG = dict(crop_size=64, scale_min=0.7, scale_max=1.6, tilt_max_deg=25.0, wiggle_max_ratio=0.15, reflect=True)


@pytest.mark.parametrize("seed", range(8))
def test_strong_augmentation_keeps_image_semseg_and_depth_aligned(seed):
    sample = coded_sample(seed=seed)
    transform = TrainTransform(**STRONG)
    out = transform(sample, torch.Generator().manual_seed(seed))
    assert out["image"].shape == (3, 64, 64) and out["image"].dtype == torch.float32
    assert out["semseg"].shape == (64, 64) and out["semseg"].dtype == torch.int64
    assert out["depth"].shape == (1, 64, 64) and out["depth"].dtype == torch.float32

    semseg, depth = out["semseg"], out["depth"][0]
    labelled = semseg != IGNORE_INDEX
    assert labelled.sum() > 500
    # depth is exactly the function of the label wherever there is a label, and invalid where there is none
    assert torch.equal(depth[labelled], 5.0 + 10.0 * semseg[labelled].float())
    assert (depth[~labelled] == 0).all()
    # the bilinear image away from label borders still shows the colour of the label
    core = interior(semseg)
    assert core.sum() > 200
    assert torch.equal(nearest_class(out["image"])[core], semseg[core])


@pytest.mark.parametrize("seed", range(6))
def test_image_and_labels_share_one_sampling_grid_to_within_half_a_pixel(seed):
    """Image channels are coordinate ramps (bilinear reproduces them exactly), depth holds the column and
    semseg the row (mod 19), sampled nearest: both must name the same source pixel as the image."""
    height, width = 96, 128
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    sample = {
        "index": 0,
        "image": torch.stack([2 * xs, 2 * ys, torch.zeros_like(xs)]).to(torch.uint8),
        "semseg": ys % 19,
        "depth": (5.0 + xs.float()).unsqueeze(0),
    }
    transform = TrainTransform(**STRONG)
    out = transform(sample, torch.Generator().manual_seed(seed))
    std, mean = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1), torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    rgb = (out["image"] * std + mean) * 255  # undo the normalisation without rounding
    x_image, y_image = rgb[0] / 2, rgb[1] / 2  # continuous source pixel coordinates
    inside = source_inside(transform, seed, height, width, margin=1.5) == 1
    assert inside.sum() > 1000
    x_label = out["depth"][0] - 5.0
    assert (x_image - x_label)[inside].abs().max() <= 0.5 + 1e-3
    rows = torch.round(y_image)
    clear = inside & ((y_image - rows).abs() < 0.45)  # not on a rounding tie
    assert torch.equal((rows[clear].long() % 19), out["semseg"][clear])


@pytest.mark.parametrize("seed", range(6))
def test_pixels_from_outside_the_image_are_ignored_never_labelled(seed):
    sample = coded_sample(64, 64)
    transform = TrainTransform(crop_size=64, tilt_max_deg=40.0, wiggle_max_ratio=0.2)
    out = transform(sample, torch.Generator().manual_seed(seed))
    inside = source_inside(transform, seed, 64, 64, margin=1.0)
    assert (inside == -1).any(), "this seed should rotate some of the crop outside the image"
    assert (out["semseg"][inside == -1] == IGNORE_INDEX).all()
    assert (out["depth"][0][inside == -1] == 0).all()
    assert (out["semseg"][inside == 1] != IGNORE_INDEX).all()
    # the image fill outside is the mean colour (0 after normalisation)
    assert out["image"][:, inside == -1].abs().max() < 1e-5


def test_small_images_are_padded_with_ignore_and_invalid_depth():
    sample = coded_sample(40, 50)
    for seed in range(3):
        for transform in (TrainTransform(64), TrainTransform(64, scale_min=0.9, scale_max=0.95)):
            out = transform(sample, torch.Generator().manual_seed(seed))
            labelled = out["semseg"] != IGNORE_INDEX
            assert 0.3 < labelled.float().mean() < 0.6  # about 40*50 of 64*64 (less when scaled down)
            assert (out["depth"][0][~labelled] == 0).all()
            assert torch.equal(out["depth"][0][labelled], 5.0 + 10.0 * out["semseg"][labelled].float())


def test_plain_crop_is_an_exact_window_and_flip_mirrors_it():
    sample = coded_sample(96, 128)
    out = TrainTransform(64)(sample, torch.Generator().manual_seed(3))
    ids, crop = sample["semseg"], out["semseg"]
    windows = [
        (y, x) for y in range(96 - 63) for x in range(128 - 63) if torch.equal(ids[y : y + 64, x : x + 64], crop)
    ]
    assert windows, "the crop should be a window of the source"
    y, x = windows[0]
    assert torch.equal(out["image"], normalize_image(sample["image"][:, y : y + 64, x : x + 64]))
    flips = [TrainTransform(64, reflect=True)(sample, torch.Generator().manual_seed(s)) for s in range(12)]
    mirrored = [
        o
        for o in flips
        if any(
            torch.equal(ids[yy : yy + 64, xx : xx + 64].flip(-1), o["semseg"])
            for yy in range(0, 33)
            for xx in range(0, 65)
        )
    ]
    assert 0 < len(mirrored) < 12  # some flipped, some not


def test_same_generator_seed_gives_the_same_augmentation_and_other_seeds_differ():
    sample = coded_sample()
    transform = TrainTransform(**STRONG)
    first = transform(sample, torch.Generator().manual_seed(11))
    again = transform(sample, torch.Generator().manual_seed(11))
    other = transform(sample, torch.Generator().manual_seed(12))
    for key in ("image", "semseg", "depth"):
        assert torch.equal(first[key], again[key])
    assert not torch.equal(first["semseg"], other["semseg"])


def test_scale_range_changes_apparent_size():
    sample = coded_sample(96, 128, block=16)
    big = TrainTransform(64, scale_min=2.0, scale_max=2.0)(sample, torch.Generator().manual_seed(0))
    # blocks of 16 px scaled by 2 are 32 px: every row has at most 3 label runs
    runs = (big["semseg"][:, 1:] != big["semseg"][:, :-1]).sum(1)
    assert runs.max() <= 2


def test_eval_transform_crops_top_left_to_multiples_of_32():
    sample = coded_sample(70, 100)
    out = EvalTransform(32)(sample)
    assert out["image"].shape == (3, 64, 96) and out["semseg"].shape == (64, 96) and out["depth"].shape == (1, 64, 96)
    assert torch.equal(out["semseg"], sample["semseg"][:64, :96])
    assert torch.equal(out["image"], normalize_image(sample["image"][:, :64, :96]))
    rgb_only = {"index": 1, "image": sample["image"]}
    assert set(EvalTransform(32)(rgb_only)) == {"index", "image"}
    with pytest.raises(ValueError, match="at least 32"):
        EvalTransform(32)({"index": 2, "image": torch.zeros(3, 20, 64, dtype=torch.uint8)})


def test_builders_read_the_config_keys():
    cfg = make_config(
        aug_input_crop_size=96,
        aug_geom_scale_min=0.5,
        aug_geom_scale_max=2.0,
        aug_geom_tilt_max_deg=5.0,
        aug_geom_wiggle_max_ratio=0.1,
        aug_geom_reflect=True,
    )
    train = build_train_transform(cfg)
    assert (
        train.crop_size,
        train.scale_min,
        train.scale_max,
        train.tilt_max_deg,
        train.wiggle_max_ratio,
        train.reflect,
    ) == (96, 0.5, 2.0, 5.0, 0.1, True)
    assert isinstance(build_eval_transform(cfg), EvalTransform)


def test_normalisation_uses_imagenet_statistics():
    image = torch.tensor([[[124]], [[116]], [[104]]], dtype=torch.uint8)
    np.testing.assert_allclose(
        normalize_image(image).flatten().numpy(),
        [(124 / 255 - 0.485) / 0.229, (116 / 255 - 0.456) / 0.224, (104 / 255 - 0.406) / 0.225],
        rtol=1e-5,
    )
    assert torch.equal(denormalize_image(normalize_image(image)), image)


@pytest.mark.parametrize("unit", ["meters", "log"])
def test_depth_unit_round_trip(unit):
    stats = {"meters": {"mean": 27.0727, "std": 29.1264}, "log": {"mean": 2.89, "std": 0.866}}
    depth_unit = DepthUnit.from_statistics(unit, stats)
    depth = torch.cat([torch.linspace(4.0, 300.0, 500), torch.tensor([0.0])])
    encoded = depth_unit.encode(depth)
    assert torch.isfinite(encoded).all()  # also at the invalid pixel (0)
    torch.testing.assert_close(depth_unit.decode(encoded[:-1]), depth[:-1], rtol=1e-5, atol=0)
    expected = (math.log(27.0727) - 2.89) / 0.866 if unit == "log" else 0.0
    assert depth_unit.encode(torch.tensor([27.0727])).item() == pytest.approx(expected, abs=1e-5)


def test_depth_unit_rejects_bad_statistics():
    with pytest.raises(ValueError, match="no 'log' entry"):
        DepthUnit.from_statistics("log", {"meters": {"mean": 1.0, "std": 1.0}})
    with pytest.raises(ValueError, match="positive std"):
        DepthUnit("meters", 1.0, 0.0)
    with pytest.raises(ValueError, match="'meters' or 'log'"):
        DepthUnit("inches", 1.0, 1.0)  # type: ignore[arg-type]
