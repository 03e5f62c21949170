"""The pre-flight data check remembers what passed (by file path, size and modification time): a second
start opens no file, a changed file is opened again, and damage in a changed file is still found."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from mtl.data import DatasetError
from mtl.data.integrity import IntegrityCache, check_data_before_training
from mtl.data.miniscapes import MiniScapes
from mtl.data.synthetic import SyntheticParams, build_synthetic


@pytest.fixture()
def dataset_root(tmp_path):
    return build_synthetic(tmp_path / "data", SyntheticParams(num_train=4, num_val=2, num_test=2, height=32, width=64))


def _datasets(root):
    return {split: MiniScapes(root, split) for split in ("train", "val", "test")}


@pytest.fixture()
def opened(monkeypatch):
    """The paths Image.open was called with."""
    paths = []
    real_open = Image.open

    def counting_open(path, *args, **kwargs):
        paths.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return paths


def test_second_check_opens_nothing_and_a_changed_file_is_opened_again(dataset_root, tmp_path, opened):
    cache = tmp_path / "cache"
    check_data_before_training(_datasets(dataset_root), cache_folder=cache)
    assert len(opened) >= (4 + 2 + 2) * 3  # every header, and the test split decoded in full
    assert IntegrityCache(dataset_root, cache).path.exists()

    opened.clear()
    check_data_before_training(_datasets(dataset_root), cache_folder=cache)
    assert opened == []

    changed = dataset_root / "train" / "depth" / "2.png"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    check_data_before_training(_datasets(dataset_root), cache_folder=cache)
    assert sorted(opened) == sorted(str(dataset_root / "train" / m / f"2.{ext}")
                                    for m, ext in (("rgb", "jpg"), ("semseg", "png"), ("depth", "png")))


def test_damage_in_a_changed_file_is_found_after_a_clean_check(dataset_root, tmp_path):
    cache = tmp_path / "cache"
    check_data_before_training(_datasets(dataset_root), cache_folder=cache)
    damaged = dataset_root / "val" / "semseg" / "1.png"
    damaged.write_bytes(damaged.read_bytes()[:20])  # truncated: its header no longer parses
    with pytest.raises(DatasetError, match=r"val/semseg/1.png is not a readable image"):
        check_data_before_training(_datasets(dataset_root), cache_folder=cache)


def test_a_changed_test_file_gets_the_full_check_again(dataset_root, tmp_path, opened):
    cache = tmp_path / "cache"
    check_data_before_training(_datasets(dataset_root), cache_folder=cache)
    changed = dataset_root / "test" / "rgb" / "0.jpg"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    opened.clear()
    check_data_before_training(_datasets(dataset_root), cache_folder=cache)
    test_files = [p for p in opened if "/test/" in p]
    assert str(changed) in test_files and len(test_files) > 1  # the header, then the whole split decoded


def test_a_damaged_cache_file_means_checking_everything_again(dataset_root, tmp_path, opened):
    cache = tmp_path / "cache"
    check_data_before_training(_datasets(dataset_root), cache_folder=cache)
    IntegrityCache(dataset_root, cache).path.write_text("{not json")
    opened.clear()
    check_data_before_training(_datasets(dataset_root), cache_folder=cache)
    assert len(opened) >= (4 + 2 + 2) * 3
