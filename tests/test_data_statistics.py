"""Depth statistics per unit, where a run reads them from, and the dataset integrity check."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtl.config import make_config
from mtl.data import integrity, load_depth_unit, statistics
from mtl.data.miniscapes import DatasetError, decode_depth, write_rgb, write_semseg
from mtl.data.statistics import compute_statistics, load_statistics, write_statistics


def plant_codes(root: Path, split: str, code_images: list[np.ndarray]) -> None:
    """Depth PNGs holding exactly the given 8-bit codes (plus matching rgb and semseg)."""
    for modality in ("rgb", "semseg", "depth"):
        (root / split / modality).mkdir(parents=True, exist_ok=True)
    for index, codes in enumerate(code_images):
        Image.fromarray(codes.astype(np.uint8)).save(root / split / "depth" / f"{index}.png")
        write_rgb(root / split / "rgb" / f"{index}.jpg", np.zeros((*codes.shape, 3), np.uint8))
        write_semseg(root / split / "semseg" / f"{index}.png", np.zeros(codes.shape, np.uint8))


def test_statistics_match_a_hand_computation(tmp_path):
    first = np.array([[0, 1, 255], [128, 128, 0]])
    second = np.array([[7, 0, 0, 200, 90, 33]])
    plant_codes(tmp_path, "train", [first, second])
    plant_codes(tmp_path, "val", [np.full((2, 2), 255)])  # other splits do not count

    valid = np.concatenate([decode_depth(c.astype(np.uint8))[c > 0] for c in (first, second)]).astype(np.float64)
    assert valid.size == 8
    stats = compute_statistics(tmp_path)
    assert stats["num_images"] == 2 and stats["num_valid_pixels"] == 8
    assert stats["meters"]["mean"] == pytest.approx(valid.mean(), rel=1e-12)
    assert stats["meters"]["std"] == pytest.approx(valid.std(), rel=1e-12)
    assert stats["log"]["mean"] == pytest.approx(np.log(valid).mean(), rel=1e-12)
    assert stats["log"]["std"] == pytest.approx(np.log(valid).std(), rel=1e-12)

    written = write_statistics(tmp_path)
    assert json.loads((tmp_path / "statistics.json").read_text()) == written == stats
    assert load_statistics(tmp_path, "synthetic") == stats
    unit = load_depth_unit(make_config(dataset="miniscapes", depth_unit="log"), tmp_path)
    assert (unit.mean, unit.std) == (stats["log"]["mean"], stats["log"]["std"])


def test_no_valid_depth_is_an_error(tmp_path):
    plant_codes(tmp_path, "train", [np.zeros((3, 3))])
    with pytest.raises(DatasetError, match="no valid depth pixel"):
        compute_statistics(tmp_path)


def test_real_miniscapes_without_the_file_uses_the_published_values_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="mtl.data.statistics"):
        stats = load_statistics(tmp_path, "miniscapes")
    assert stats["meters"] == {"mean": 27.0727, "std": 29.1264}
    assert stats["log"] == {"mean": 2.89, "std": 0.866}
    assert len(caplog.records) == 1 and "published MiniScapes statistics" in caplog.records[0].getMessage()
    with pytest.raises(DatasetError, match="has no statistics.json"):
        load_statistics(tmp_path, "synthetic")


def test_a_malformed_statistics_file_is_named(tmp_path):
    (tmp_path / "statistics.json").write_text(
        json.dumps({"meters": {"mean": 1.0, "std": 0.0}, "log": {"mean": 1, "std": 1}})
    )
    with pytest.raises(DatasetError, match=r"statistics\.json: meters\.std is 0\.0"):
        load_statistics(tmp_path, "miniscapes")
    (tmp_path / "statistics.json").write_text("{")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_statistics(tmp_path, "miniscapes")


def test_statistics_command_line(tmp_path, capsys):
    plant_codes(tmp_path, "train", [np.full((2, 2), 100)])
    assert statistics.main([str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["num_valid_pixels"] == 4
    assert (tmp_path / "statistics.json").is_file()
    assert statistics.main([str(tmp_path / "missing")]) == 1


def test_integrity_check_reports_each_problem_with_its_file(tmp_path, capsys):
    plant_codes(tmp_path, "train", [np.full((4, 6), 50)] * 3)
    plant_codes(tmp_path, "val", [np.full((4, 6), 50)] * 2)
    (tmp_path / "test" / "rgb").mkdir(parents=True)
    write_rgb(tmp_path / "test" / "rgb" / "0.jpg", np.zeros((4, 6, 3), np.uint8))
    assert integrity.check_dataset(tmp_path) == []
    assert integrity.main([str(tmp_path)]) == 0

    data = (tmp_path / "train" / "rgb" / "0.jpg").read_bytes()
    (tmp_path / "train" / "rgb" / "0.jpg").write_bytes(data[: len(data) // 2])  # truncated
    Image.fromarray(np.full((4, 6), 30, np.uint8)).save(tmp_path / "train" / "semseg" / "1.png")  # id 30
    Image.fromarray(np.full((5, 6), 9, np.uint8)).save(tmp_path / "train" / "depth" / "2.png")  # wrong size
    (tmp_path / "val" / "semseg" / "1.png").unlink()
    for path in (tmp_path / "test" / "rgb").iterdir():
        path.unlink()
    problems = integrity.check_dataset(tmp_path)
    expected = [
        r"train/rgb/0\.jpg cannot be decoded",
        r"train/semseg/1\.png holds class ids \[30\]",
        r"train/depth/2\.png is 6x5 but its rgb image is 6x4",
        r"val/rgb/1\.jpg has no matching .*val/semseg/1\.png",
        r"split .*test is empty",
    ]
    assert len(problems) == len(expected), problems
    for pattern, problem in zip(expected, problems, strict=False):
        assert re.search(pattern, problem), (pattern, problem)
    assert integrity.main([str(tmp_path)]) == 1
    assert "5 problem(s)" in capsys.readouterr().err
