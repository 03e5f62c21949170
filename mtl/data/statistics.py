"""Depth statistics of a dataset's training split, per depth unit, and where a run gets them from.

The statistics are computed over every valid depth pixel (code > 0) of the split. Depth is stored as
8-bit codes, so a histogram of the codes is exact and cheap; mean and standard deviation (population,
ddof=0) then follow in float64 from the decoded value of each code, in metres and in natural-log metres.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from mtl.data.miniscapes import (
    DEPTH_DECODE_TABLE,
    DEPTH_MEAN_M,
    DEPTH_STD_M,
    DatasetError,
    list_indices,
    read_depth_codes,
    sample_path,
)
from mtl.run.io import atomic_write_bytes

logger = logging.getLogger(__name__)

STATISTICS_NAME = "statistics.json"

# The real MiniScapes training split, as published with the assignment (log values from earlier solutions).
PUBLISHED_MINISCAPES_STATISTICS: dict[str, Any] = {
    "meters": {"mean": DEPTH_MEAN_M, "std": DEPTH_STD_M},
    "log": {"mean": 2.89, "std": 0.866},
    "source": "published MiniScapes training-split values",
}


def depth_code_histogram(root: Union[str, Path], split: str = "train") -> tuple[np.ndarray, int]:
    """(counts of each 8-bit depth code over the split, number of images)."""
    folder = Path(root) / split / "depth"
    if not folder.is_dir():
        raise DatasetError(f"depth folder {folder} does not exist; statistics need the {split} split's depth labels")
    indices = list_indices(folder, ".png")
    if not indices:
        raise DatasetError(f"depth folder {folder} holds no <index>.png files")
    counts = np.zeros(256, np.int64)
    for index in indices:
        counts += np.bincount(read_depth_codes(sample_path(root, split, "depth", index)).ravel(), minlength=256)
    return counts, len(indices)


def statistics_from_histogram(counts: np.ndarray) -> dict[str, Any]:
    valid = counts[1:].astype(np.float64)
    total = valid.sum()
    if total == 0:
        raise DatasetError("no valid depth pixel (every code is 0); cannot compute depth statistics")
    metres = DEPTH_DECODE_TABLE[1:].astype(np.float64)
    result: dict[str, Any] = {}
    for unit, values in (("meters", metres), ("log", np.log(metres))):
        mean = float((valid * values).sum() / total)
        std = float(math.sqrt((valid * (values - mean) ** 2).sum() / total))
        result[unit] = {"mean": mean, "std": std}
    result["num_valid_pixels"] = int(total)
    return result


def compute_statistics(root: Union[str, Path], split: str = "train") -> dict[str, Any]:
    """``{"meters": {"mean", "std"}, "log": {"mean", "std"}, "num_images", "num_valid_pixels", "split"}``."""
    counts, num_images = depth_code_histogram(root, split)
    return {**statistics_from_histogram(counts), "num_images": num_images, "split": split}


def write_statistics(root: Union[str, Path], split: str = "train") -> dict[str, Any]:
    """Compute the split's statistics and write them to ``<root>/statistics.json`` atomically."""
    stats = compute_statistics(root, split)
    atomic_write_bytes(Path(root) / STATISTICS_NAME, (json.dumps(stats, indent=2) + "\n").encode())
    return stats


def _validated(stats: Any, path: Path) -> dict[str, Any]:
    if not isinstance(stats, dict):
        raise DatasetError(f"{path} must hold a JSON object, got {type(stats).__name__}")
    for unit in ("meters", "log"):
        entry = stats.get(unit)
        if not isinstance(entry, dict):
            raise DatasetError(f'{path} has no {unit!r} entry; expected {{"{unit}": {{"mean": ..., "std": ...}}}}')
        for key in ("mean", "std"):
            value = entry.get(key)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DatasetError(f"{path}: {unit}.{key} is {value!r}; expected a finite number")
        if entry["std"] <= 0:
            raise DatasetError(f"{path}: {unit}.std is {entry['std']}; expected a positive number")
    return stats


def load_statistics(root: Union[str, Path], dataset: str) -> dict[str, Any]:
    """The statistics beside the dataset (``<root>/statistics.json``). Real MiniScapes without that file uses
    the published values (and says so); a synthetic dataset always has the file, so its absence is an error."""
    path = Path(root) / STATISTICS_NAME
    if path.is_file():
        try:
            return _validated(json.loads(path.read_text()), path)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON: {exc}") from None
    if dataset == "miniscapes":
        logger.warning(
            "%s not found: using the published MiniScapes statistics (metres %.4f/%.4f, log %.3f/%.3f); "
            "run `python -m mtl.data.statistics %s` to compute them from the files",
            path, DEPTH_MEAN_M, DEPTH_STD_M, 2.89, 0.866, root,
        )  # fmt: skip
        return dict(PUBLISHED_MINISCAPES_STATISTICS)
    if dataset == "synthetic":
        raise DatasetError(
            f"synthetic dataset {root} has no {STATISTICS_NAME} (the generator writes it); rebuild the dataset"
        )
    raise DatasetError(f"unknown dataset kind {dataset!r}; expected 'miniscapes' or 'synthetic'")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtl.data.statistics", description=f"Write <root>/{STATISTICS_NAME}."
    )
    parser.add_argument("root", help="dataset folder (MiniScapes layout)")
    parser.add_argument("--split", default="train", help="split to compute over (default: train)")
    args = parser.parse_args(argv)
    try:
        stats = write_statistics(args.root, args.split)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
