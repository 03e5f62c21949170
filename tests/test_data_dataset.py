"""The MiniScapes reader: layout discovery, errors that name files, and the per-sample determinism contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mtl.config import make_config
from mtl.data import DatasetError, build_datasets
from mtl.data.miniscapes import MiniScapes, write_depth, write_rgb, write_semseg
from mtl.data.synthetic import SyntheticParams, generate
from mtl.data.transforms import EvalTransform, TrainTransform

STRONG = dict(crop_size=64, scale_min=0.7, scale_max=1.5, tilt_max_deg=15.0, wiggle_max_ratio=0.1, reflect=True)


def plant(root: Path, split: str, count: int, size=(70, 100), labels: bool = True, seed: int = 0) -> None:
    """A split of random images in the MiniScapes layout."""
    rng = np.random.default_rng(seed)
    height, width = size
    for modality in ("rgb", "semseg", "depth") if labels else ("rgb",):
        (root / split / modality).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        write_rgb(root / split / "rgb" / f"{index}.jpg", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        if labels:
            write_semseg(
                root / split / "semseg" / f"{index}.png", rng.integers(0, 19, (height, width)).astype(np.uint8)
            )
            depth = rng.uniform(4, 300, (height, width))
            write_depth(root / split / "depth" / f"{index}.png", depth, valid=rng.random((height, width)) > 0.1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "tiny"
    generate(root, SyntheticParams(num_train=6, num_val=3, num_test=3, height=64, width=128, seed=0))
    return root


def test_reads_sizes_indices_and_types_from_the_files(tmp_path):
    plant(tmp_path, "train", 3, size=(70, 100))
    plant(tmp_path, "test", 12, size=(48, 80), labels=False)
    train = MiniScapes(tmp_path, "train")
    assert train.indices == [0, 1, 2] and train.has_labels and len(train) == 3
    sample = train[1]
    assert sample["index"] == 1
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 70, 100)
    assert sample["semseg"].dtype == torch.int64 and sample["semseg"].shape == (70, 100)
    assert sample["depth"].dtype == torch.float32 and sample["depth"].shape == (1, 70, 100)
    assert (sample["depth"] == 0).any() and (sample["depth"] >= 0).all()
    test = MiniScapes(tmp_path, "test")
    assert not test.has_labels and test.indices == list(range(12))  # numeric, not 0, 1, 10, 11, 2, ...
    assert set(test[10]) == {"index", "image"} and test[10]["index"] == 10
    with pytest.raises(IndexError):
        test[12]


def test_clear_errors_name_the_folder_or_file(tmp_path):
    with pytest.raises(DatasetError, match=r"val does not exist"):
        MiniScapes(tmp_path, "val")
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetError, match=r"val/rgb does not exist"):
        MiniScapes(tmp_path, "val")
    plant(tmp_path, "train", 3)
    (tmp_path / "train" / "depth" / "2.png").unlink()
    with pytest.raises(DatasetError, match=r"train/rgb/2\.jpg has no matching .*train/depth/2\.png"):
        MiniScapes(tmp_path, "train")
    plant(tmp_path, "train", 3)
    (tmp_path / "train" / "semseg" / "1.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match=r"train/semseg/1\.png cannot be decoded"):
        MiniScapes(tmp_path, "train")[1]
    plant(tmp_path, "other", 1)
    write_depth(tmp_path / "other" / "depth" / "0.png", np.full((10, 10), 5.0))
    with pytest.raises(DatasetError, match=r"other/depth/0\.png is 10x10 but .*other/rgb/0\.jpg is 100x70"):
        MiniScapes(tmp_path, "other")[0]
    plant(tmp_path, "padded", 1)
    (tmp_path / "padded" / "rgb" / "0.jpg").rename(tmp_path / "padded" / "rgb" / "00.jpg")
    with pytest.raises(DatasetError, match=r"00\.jpg is not named <index>\.jpg"):
        MiniScapes(tmp_path, "padded")
    plant(tmp_path, "half", 1)
    for path in (tmp_path / "half" / "depth").iterdir():
        path.unlink()
    (tmp_path / "half" / "depth").rmdir()
    with pytest.raises(DatasetError, match=r"has semseg/ but not depth/"):
        MiniScapes(tmp_path, "half")


def _as_numpy(sample: dict) -> dict:
    return {k: (v.numpy().copy() if isinstance(v, torch.Tensor) else v) for k, v in sample.items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_augmentation_is_a_function_of_seed_epoch_and_index_only(tiny):
    first = MiniScapes(tiny, "train", transform=TrainTransform(**STRONG), seed=7)
    second = MiniScapes(tiny, "train", transform=TrainTransform(**STRONG), seed=7)
    forward = [_as_numpy(first[(3, p)]) for p in range(len(first))]
    backward = [_as_numpy(second[(3, p)]) for p in reversed(range(len(second)))][::-1]
    assert all(_equal(a, b) for a, b in zip(forward, backward, strict=False))
    assert _equal(_as_numpy(first[2]), _as_numpy(second[(0, 2)]))  # an int position means epoch 0
    next_epoch = _as_numpy(first[(4, 0)])
    assert not np.array_equal(next_epoch["image"], forward[0]["image"])
    other_seed = MiniScapes(tiny, "train", transform=TrainTransform(**STRONG), seed=8)
    assert not np.array_equal(_as_numpy(other_seed[(3, 0)])["image"], forward[0]["image"])


def test_worker_processes_do_not_change_the_samples(tiny):
    dataset = MiniScapes(tiny, "train", transform=TrainTransform(**STRONG), seed=1)
    items = [(2, p) for p in (4, 0, 5, 1, 3, 2)]
    single = [b for b in DataLoader(dataset, batch_size=2, sampler=items, num_workers=0)]
    multi = [b for b in DataLoader(dataset, batch_size=2, sampler=items, num_workers=2, multiprocessing_context="fork")]
    assert len(single) == len(multi) == 3
    for a, b in zip(single, multi, strict=False):
        assert all(torch.equal(a[k], b[k]) for k in ("index", "image", "semseg", "depth"))


def test_eval_split_crops_to_multiples_of_32(tmp_path):
    plant(tmp_path, "val", 2, size=(70, 100))
    val = MiniScapes(tmp_path, "val", transform=EvalTransform(32))
    raw = MiniScapes(tmp_path, "val")[0]
    sample = val[0]
    assert (
        sample["image"].shape == (3, 64, 96)
        and sample["semseg"].shape == (64, 96)
        and sample["depth"].shape == (1, 64, 96)
    )
    assert torch.equal(sample["semseg"], raw["semseg"][:64, :96])
    assert torch.equal(sample["depth"], raw["depth"][:, :64, :96])


def test_build_datasets_wires_splits_transforms_and_seed(tiny):
    cfg = make_config(dataset="miniscapes", dataset_root=str(tiny), seed=3, aug_input_crop_size=64)
    datasets = build_datasets(cfg)
    assert sorted(datasets) == ["test", "train", "val"]
    assert isinstance(datasets["train"].transform, TrainTransform) and datasets["train"].seed == 3
    assert isinstance(datasets["val"].transform, EvalTransform) and isinstance(
        datasets["test"].transform, EvalTransform
    )
    assert datasets["train"][0]["image"].shape == (3, 64, 64)
    assert datasets["val"][0]["image"].shape == (3, 64, 128)


def test_build_datasets_explains_a_missing_miniscapes_root(tmp_path):
    with pytest.raises(DatasetError, match="'dataset_root' is not set"):
        build_datasets(make_config(dataset="miniscapes"))
    with pytest.raises(DatasetError, match="not a folder"):
        build_datasets(make_config(dataset="miniscapes", dataset_root=str(tmp_path / "nowhere")))
