"""The synthetic generator: MiniScapes layout and encodings, determinism, class coverage, geometry, atomic builds."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mtl.config import make_config
from mtl.data import build_datasets, load_depth_unit, synthetic
from mtl.data.miniscapes import DEPTH_MAX_M, DEPTH_MIN_M, NUM_CLASSES, DatasetError, MiniScapes, read_depth, read_semseg
from mtl.data.statistics import compute_statistics
from mtl.data.synthetic import SyntheticParams, build_synthetic, ensure_synthetic, generate, render_scene
from mtl.data.synthetic import dataset as synthetic_dataset

TINY = SyntheticParams(num_train=6, num_val=3, num_test=3, height=64, width=128, seed=0)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every data file (the manifest holds a timing, so it is left out)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "synthetic.json"
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "tiny"
    generate(root, TINY)
    return root


def test_layout_and_file_formats_are_miniscapes(tiny):
    for split, count in TINY.split_sizes().items():
        for modality, ext in (("rgb", ".jpg"), ("semseg", ".png"), ("depth", ".png")):
            names = sorted(p.name for p in (tiny / split / modality).iterdir())
            assert names == sorted(f"{i}{ext}" for i in range(count)), (split, modality)
        with Image.open(tiny / split / "rgb" / "0.jpg") as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (128, 64))
        with Image.open(tiny / split / "semseg" / "0.png") as image:
            assert (image.format, image.mode, image.size) == ("PNG", "P", (128, 64))
        with Image.open(tiny / split / "depth" / "0.png") as image:
            assert (image.format, image.mode, image.size) == ("PNG", "L", (128, 64))
    stats = json.loads((tiny / "statistics.json").read_text())
    assert stats == compute_statistics(tiny)
    # The reader reads every split, the test split with its labels.
    for split in ("train", "val", "test"):
        dataset = MiniScapes(tiny, split)
        assert dataset.has_labels and len(dataset) == TINY.split_sizes()[split]
        sample = dataset[0]
        assert sample["image"].shape == (3, 64, 128) and sample["semseg"].shape == (64, 128)


def test_every_split_shows_all_19_classes(tiny):
    for split, count in TINY.split_sizes().items():
        seen = np.zeros(256, np.int64)
        for index in range(count):
            seen += np.bincount(read_semseg(tiny / split / "semseg" / f"{index}.png").ravel(), minlength=256)
        assert (seen[:NUM_CLASSES] > 0).all(), (split, seen[:NUM_CLASSES])
        assert seen[NUM_CLASSES:].sum() == 0  # every pixel has a class, none is ignore


def test_depth_is_in_range_where_valid_and_invalid_exactly_on_sky(tiny):
    for split in ("train", "val", "test"):
        for index in range(TINY.split_sizes()[split]):
            depth = read_depth(tiny / split / "depth" / f"{index}.png")
            ids = read_semseg(tiny / split / "semseg" / f"{index}.png")
            valid = depth > 0
            assert valid.mean() > 0.5
            assert depth[valid].min() >= DEPTH_MIN_M * 0.999 and depth[valid].max() <= DEPTH_MAX_M * 1.001
            np.testing.assert_array_equal(~valid, ids == 10)  # sky (id 10) is the only invalid surface


GROUND = (0, 1, 9)  # road, sidewalk, terrain
OBJECTS = (5, 6, 7, 11, 12, 13, 14, 15, 16, 17, 18)


def test_depth_follows_the_scene_geometry():
    """Ground depth grows row by row towards the horizon, and objects stand on the ground: the nearest
    object's lowest pixel lies where the ground is as far away as the object."""
    checked = 0
    for index in range(8):
        _, ids, depth = render_scene(3, "train", index, 128, 256, 8)
        ground = np.isin(ids, GROUND)
        ground_rows = np.nonzero(ground.any(1))[0]
        row_depth = np.array([depth[r][ground[r]].mean() for r in ground_rows])
        spread = np.array([np.ptp(depth[r][ground[r]]) for r in ground_rows])
        assert spread.max() < 1e-3 * row_depth.max()  # a flat ground: depth depends on the row only
        assert np.all(np.diff(row_depth) < 0), "ground depth must shrink towards the bottom of the image"

        objects = np.isin(ids, OBJECTS)
        nearest = depth[objects].min()
        bottom = np.nonzero((objects & (depth == nearest)).any(1))[0].max()
        if bottom + 1 not in ground_rows or bottom not in ground_rows:
            continue  # its feet are below the image or hidden behind the image border
        below, at = (row_depth[np.searchsorted(ground_rows, r)] for r in (bottom + 1, bottom))
        assert below <= nearest * 1.0001 and nearest <= at * 1.0001, (index, below, nearest, at)
        checked += 1
    assert checked >= 4


def test_same_parameters_build_byte_identical_datasets(tiny, tmp_path):
    again = tmp_path / "again"
    generate(again, TINY)
    assert tree_digest(again) == tree_digest(tiny)
    other = tmp_path / "other"
    generate(other, SyntheticParams(num_train=6, num_val=3, num_test=3, height=64, width=128, seed=1))
    assert tree_digest(other) != tree_digest(tiny)


def test_build_is_atomic_and_reuses_a_finished_dataset(tmp_path, monkeypatch):
    target = tmp_path / "data"
    calls = []

    def failing_generate(root, params, progress=False):
        (Path(root) / "train" / "rgb").mkdir(parents=True)
        (Path(root) / "train" / "rgb" / "0.jpg").write_bytes(b"half")
        calls.append(root)
        raise KeyboardInterrupt  # a build killed half way

    small = SyntheticParams(2, 1, 1, 64, 96, 0)
    monkeypatch.setattr(synthetic_dataset, "generate", failing_generate)  # what build_synthetic calls
    with pytest.raises(KeyboardInterrupt):
        build_synthetic(target, small)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".build-lock")] == []
    monkeypatch.undo()

    path = build_synthetic(target, small)
    assert path == target and (target / "synthetic.json").is_file()
    stamp = (target / "train" / "rgb" / "0.jpg").stat().st_mtime_ns
    assert build_synthetic(target, small) == target  # already there: not rebuilt
    assert (target / "train" / "rgb" / "0.jpg").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="was built with params"):
        build_synthetic(target, SyntheticParams(3, 1, 1, 64, 96, 0))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a synthetic dataset"):
        build_synthetic(foreign, small)


def _build_in_subprocess(args):
    root, params = args
    return str(build_synthetic(root, params))


def test_two_processes_building_at_once_produce_one_intact_dataset(tmp_path):
    params = SyntheticParams(3, 1, 1, 64, 96, 2)
    target = tmp_path / "shared"
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_build_in_subprocess, [(target, params)] * 2)
    assert results == [str(target)] * 2
    reference = tmp_path / "reference"
    generate(reference, params)
    assert tree_digest(target) == tree_digest(reference)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["reference", "shared"]


def test_ensure_synthetic_uses_the_cache_folder_keyed_by_parameters(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_CACHE_DIR", str(tmp_path / "cache"))
    keys = dict(
        synthetic_num_train=2, synthetic_num_val=1, synthetic_num_test=1, synthetic_height=64, synthetic_width=96
    )
    cfg = make_config(keys)
    root = ensure_synthetic(cfg)
    assert (
        root.parent == tmp_path / "cache" and root.name == f"synthetic-{SyntheticParams.from_config(cfg).short_hash()}"
    )
    assert ensure_synthetic(make_config(keys, seed=5)) == root  # the run seed is not a dataset parameter
    assert ensure_synthetic(make_config(keys, synthetic_seed=1)) != root
    explicit = tmp_path / "explicit"
    assert ensure_synthetic(make_config(keys, dataset_root=str(explicit))) == explicit.absolute()
    datasets = build_datasets(make_config(keys, dataset_root=str(explicit)))
    assert [len(datasets[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    unit = load_depth_unit(make_config(keys, depth_unit="log"), explicit)
    assert unit.unit == "log" and unit.mean == pytest.approx(compute_statistics(explicit)["log"]["mean"])


def test_command_line_builds_a_dataset(tmp_path, capsys):
    assert (
        synthetic.main(
            [
                "--root",
                str(tmp_path / "cli"),
                "--num_train",
                "2",
                "--num_val",
                "1",
                "--num_test",
                "1",
                "--height",
                "64",
                "--width",
                "96",
            ]
        )
        == 0
    )
    assert MiniScapes(tmp_path / "cli", "train").indices == [0, 1]
    assert (
        synthetic.main(
            [
                "--root",
                str(tmp_path / "cli"),
                "--num_train",
                "3",
                "--num_val",
                "1",
                "--num_test",
                "1",
                "--height",
                "64",
                "--width",
                "96",
            ]
        )
        == 1
    )
    assert "was built with params" in capsys.readouterr().err


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="num_val must be at least 1"):
        SyntheticParams(num_val=0)
    with pytest.raises(ValueError, match="at least 32x32"):
        SyntheticParams(height=16)
