"""The data layer: the MiniScapes layout and reader, the synthetic generator, transforms and statistics.

``build_datasets(cfg)`` is what a run uses: it resolves the dataset folder (building the synthetic one on
first use), and returns the train/val/test splits with their transforms.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from mtl.data.miniscapes import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    PALETTE,
    DatasetError,
    MiniScapes,
)
from mtl.data.transforms import DepthUnit, build_eval_transform, build_train_transform

__all__ = [
    "CLASS_NAMES",
    "IGNORE_INDEX",
    "NUM_CLASSES",
    "PALETTE",
    "DatasetError",
    "DepthUnit",
    "MiniScapes",
    "build_datasets",
    "dataset_problem",
    "load_depth_unit",
    "resolve_dataset_root",
]


SPLIT_FOLDERS = ("train", "val", "test")


def dataset_problem(cfg: Any, splits: Sequence[str] = SPLIT_FOLDERS) -> str | None:
    """Why the dataset folder of ``cfg`` is not there to train on (no folder, or one without the MiniScapes
    splits), in words that say where it was looked for; None when it is there, and for the synthetic dataset
    (built on first use). Stat only: cheap enough to ask before anything is written."""
    if cfg.dataset != "miniscapes":
        return None
    if cfg.dataset_root is None:
        return ("config key 'dataset_root' is not set: dataset 'miniscapes' needs the folder that holds train/, "
                "val/ and test/")
    root = Path(cfg.dataset_root).expanduser()
    where = repr(str(root)) if root.is_absolute() else f"{str(root)!r} ({root.absolute()})"
    if not root.is_dir():
        return (f"config key 'dataset_root' is {where}, which is not a folder; expected the MiniScapes root with "
                "train/, val/ and test/")
    missing = [split for split in splits if not (root / split).is_dir()]
    if missing:
        return (f"config key 'dataset_root' is {where}, which has no {', '.join(f'{m}/' for m in missing)}; "
                "expected the MiniScapes root with train/, val/ and test/ (each with rgb/, semseg/, depth/)")
    return None


def resolve_dataset_root(cfg: Any, splits: Sequence[str] = SPLIT_FOLDERS) -> Path:
    """The dataset folder of ``cfg``: the synthetic one (built on first use) or the given MiniScapes folder,
    which must hold ``splits`` (grading needs the test split alone)."""
    if cfg.dataset == "synthetic":
        from mtl.data.synthetic import ensure_synthetic  # (lazy for the same reason)

        return ensure_synthetic(cfg)
    if cfg.dataset == "miniscapes":
        problem = dataset_problem(cfg, splits)
        if problem:
            raise DatasetError(problem)
        return Path(cfg.dataset_root).expanduser()
    raise DatasetError(f"config key 'dataset' is {cfg.dataset!r}; expected 'synthetic' or 'miniscapes'")


def build_datasets(cfg: Any) -> dict[str, MiniScapes]:
    """``{"train", "val", "test"}`` splits: train with the random augmentation (seeded by ``cfg.seed``),
    val and test with the evaluation crop. Test has labels only where the folder holds them."""
    root = resolve_dataset_root(cfg)
    train = MiniScapes(root, "train", transform=build_train_transform(cfg), seed=cfg.seed)
    val = MiniScapes(root, "val", transform=build_eval_transform(cfg), seed=cfg.seed)
    test = MiniScapes(root, "test", transform=build_eval_transform(cfg), seed=cfg.seed)
    if not train.has_labels or not val.has_labels:
        unlabelled = [d.split for d in (train, val) if not d.has_labels]
        raise DatasetError(
            f"dataset {root}: split(s) {unlabelled} have no semseg/ and depth/ labels; training needs them"
        )
    return {"train": train, "val": val, "test": test}


def load_depth_unit(cfg: Any, root: Path | str) -> DepthUnit:
    """The depth target of ``cfg.depth_unit`` with the dataset's training statistics."""
    # Imported here so `python -m mtl.data.statistics` does not find its module already imported.
    from mtl.data.statistics import load_statistics

    return DepthUnit.from_statistics(cfg.depth_unit, load_statistics(root, cfg.dataset))
