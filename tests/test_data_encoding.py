"""Depth and semseg encodings of the MiniScapes layout, and the atomic writers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mtl.data.miniscapes import (
    DEPTH_MAX_M,
    DEPTH_MIN_M,
    DISPARITY_MAX,
    DISPARITY_MIN,
    DISPARITY_STEP,
    PALETTE,
    DatasetError,
    decode_depth,
    decode_depth_tensor,
    encode_depth,
    encode_depth_tensor,
    read_depth,
    read_rgb,
    read_semseg,
    write_depth,
    write_rgb,
    write_semseg,
)


def test_published_constants_match_torchvision_cityscapes():
    from torchvision.datasets import Cityscapes

    evaluated = sorted((c.train_id, c.name, c.color) for c in Cityscapes.classes if not c.ignore_in_eval)
    from mtl.data.miniscapes import CLASS_NAMES

    assert [name for _, name, _ in evaluated] == list(CLASS_NAMES)
    assert [tuple(color) for _, _, color in evaluated] == PALETTE


def test_decode_matches_the_disparity_formula():
    codes = np.arange(256, dtype=np.uint8)
    depth = decode_depth(codes)
    assert depth.dtype == np.float32 and depth[0] == 0
    expected = 1.0 / (DISPARITY_MIN + (codes[1:].astype(np.float64) - 1) / 254 * (DISPARITY_MAX - DISPARITY_MIN))
    np.testing.assert_allclose(depth[1:], expected, rtol=1e-6)
    assert depth[1] == pytest.approx(DEPTH_MAX_M, rel=1e-6) and depth[255] == pytest.approx(DEPTH_MIN_M, rel=1e-6)


def test_round_trip_loses_at_most_half_a_quantisation_step_in_disparity():
    depth = np.geomspace(DEPTH_MIN_M, DEPTH_MAX_M, 5000)
    codes = encode_depth(depth)
    assert codes.min() >= 1
    back = decode_depth(codes).astype(np.float64)
    error_steps = np.abs(1.0 / back - 1.0 / depth) / DISPARITY_STEP
    assert error_steps.max() <= 0.5 + 1e-4
    # every code decodes to itself
    all_codes = np.arange(1, 256, dtype=np.uint8)
    np.testing.assert_array_equal(encode_depth(decode_depth(all_codes)), all_codes)


def test_out_of_range_values_clamp_and_invalid_stays_zero():
    depth = np.array([0.0, -3.0, 1.0, 3.99, 301.0, 1e6, np.inf, 20.0])
    np.testing.assert_array_equal(encode_depth(depth)[:7], [255, 255, 255, 255, 1, 1, 1])
    valid = depth > 0
    codes = encode_depth(depth, valid=valid)
    assert codes[0] == 0 and codes[1] == 0 and codes[-1] > 0
    assert decode_depth(codes)[0] == 0
    with pytest.raises(ValueError, match="NaN"):
        encode_depth(np.array([np.nan]))


def test_tensor_versions_agree_with_numpy():
    depth = torch.cat([torch.linspace(0.5, 400.0, 1000), torch.tensor([float("inf"), -1.0])]).view(2, -1)
    codes = encode_depth_tensor(depth)
    assert codes.dtype == torch.uint8
    np.testing.assert_array_equal(codes.numpy(), encode_depth(depth.numpy()))
    all_codes = torch.arange(256, dtype=torch.uint8)
    np.testing.assert_array_equal(decode_depth_tensor(all_codes).numpy(), decode_depth(all_codes.numpy()))


def test_depth_png_round_trip(tmp_path):
    depth = np.array([[4.0, 10.0, 50.0], [120.0, 300.0, 0.0]], np.float32)
    write_depth(tmp_path / "d.png", depth, valid=depth > 0)
    with Image.open(tmp_path / "d.png") as image:
        assert image.mode == "L"
    read = read_depth(tmp_path / "d.png")
    assert read[1, 2] == 0
    np.testing.assert_array_equal(encode_depth(read, read > 0), encode_depth(depth, depth > 0))
    # A prediction tensor without a mask lands on valid codes only.
    write_depth(tmp_path / "p.png", torch.tensor([[0.0, 1000.0]]))
    assert (read_depth(tmp_path / "p.png") > 0).all()


def test_semseg_palette_and_grey_pngs_read_back_to_the_same_ids(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 19, (7, 11)).astype(np.uint8)
    ids[0, :3] = 255
    write_semseg(tmp_path / "p.png", ids)
    with Image.open(tmp_path / "p.png") as image:
        assert image.mode == "P"
        assert image.getpalette()[: 3 * 19] == [c for colour in PALETTE for c in colour]
    Image.fromarray(ids).save(tmp_path / "l.png")  # mode L: grey values are the ids
    np.testing.assert_array_equal(read_semseg(tmp_path / "p.png"), ids)
    np.testing.assert_array_equal(read_semseg(tmp_path / "l.png"), ids)
    write_semseg(tmp_path / "t.png", torch.from_numpy(ids.astype(np.int64)))
    np.testing.assert_array_equal(read_semseg(tmp_path / "t.png"), ids)


def test_semseg_rejects_ids_outside_the_label_space(tmp_path):
    Image.fromarray(np.full((3, 3), 19, np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(DatasetError, match=r"bad\.png.*\[19\]"):
        read_semseg(tmp_path / "bad.png")
    with pytest.raises(DatasetError, match="class ids"):
        write_semseg(tmp_path / "w.png", np.full((2, 2), 40, np.uint8))
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DatasetError, match="mode RGB; expected P or L"):
        read_semseg(tmp_path / "rgb.png")


def test_readers_name_the_file_they_cannot_decode(tmp_path):
    write_rgb(tmp_path / "ok.jpg", np.full((16, 16, 3), 100, np.uint8))
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"cut\.jpg cannot be decoded"):
        read_rgb(tmp_path / "cut.jpg")
    with pytest.raises(DatasetError, match=r"junk\.png cannot be decoded"):
        read_depth(tmp_path / "junk.png")
    with pytest.raises(DatasetError, match=r"missing\.png does not exist"):
        read_semseg(tmp_path / "missing.png")
    assert read_rgb(tmp_path / "ok.jpg").shape == (16, 16, 3)


def test_writers_replace_atomically_and_leave_no_temporary_files(tmp_path):
    write_semseg(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    write_semseg(tmp_path / "a.png", np.ones((4, 4), np.uint8))
    write_depth(tmp_path / "b.png", np.full((4, 4), 10.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]
    assert (read_semseg(tmp_path / "a.png") == 1).all()
