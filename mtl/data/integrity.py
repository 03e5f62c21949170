"""Check a MiniScapes-layout folder file by file before spending GPU hours on it.

Every problem names the file: undecodable or truncated images, wrong image modes, rgb/label size
mismatches, label ids outside 0..18 and 255, rgb files without labels (or labels without rgb) in a
labelled split, badly named files, and missing or empty splits. ``check_data_before_training`` is the
cheap part of this that every training runs first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Union

from mtl.data.miniscapes import (
    MODALITY_EXTENSIONS,
    SPLITS,
    DatasetError,
    list_indices,
    read_depth_codes,
    read_rgb,
    read_semseg,
    sample_path,
)


def _indices(folder: Path, problems: list[str]) -> list[int]:
    try:
        return list_indices(folder, MODALITY_EXTENSIONS[folder.name])
    except DatasetError as exc:
        problems.append(str(exc))
        return []


def check_split(root: Path, split: str) -> tuple[list[str], int]:
    """(problems, number of samples checked) for one split."""
    problems: list[str] = []
    split_dir = root / split
    if not split_dir.is_dir():
        return [f"split folder {split_dir} is missing"], 0
    rgb_dir = split_dir / "rgb"
    if not rgb_dir.is_dir():
        return [f"folder {rgb_dir} is missing"], 0
    rgb_indices = _indices(rgb_dir, problems)
    if not rgb_indices:
        problems.append(f"split {split_dir} is empty (no <index>.jpg in {rgb_dir})")
        return problems, 0

    label_dirs = [split_dir / m for m in ("semseg", "depth")]
    present = [d for d in label_dirs if d.is_dir()]
    if len(present) == 1:
        missing = next(d for d in label_dirs if not d.is_dir())
        problems.append(f"split {split_dir} has {present[0].name}/ but {missing} is missing")
    label_indices = {d.name: set(_indices(d, problems)) for d in present}
    for modality, indices in label_indices.items():
        for orphan in sorted(indices - set(rgb_indices))[:20]:
            problems.append(f"{sample_path(root, split, modality, orphan)} has no matching rgb file")

    for index in rgb_indices:
        try:
            size = read_rgb(sample_path(root, split, "rgb", index)).shape[:2]
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        for modality, indices in label_indices.items():
            path = sample_path(root, split, modality, index)
            if index not in indices:
                problems.append(f"{sample_path(root, split, 'rgb', index)} has no matching {path}")
                continue
            try:
                label = read_semseg(path) if modality == "semseg" else read_depth_codes(path)
            except DatasetError as exc:
                problems.append(str(exc))
                continue
            if label.shape != size:
                problems.append(f"{path} is {label.shape[1]}x{label.shape[0]} but its rgb image is {size[1]}x{size[0]}")
    return problems, len(rgb_indices)


def check_dataset(root: Union[str, Path]) -> list[str]:
    """Every problem found in the train, val and test splits of ``root`` (empty when it is sound)."""
    root = Path(root)
    if not root.is_dir():
        return [f"dataset folder {root} does not exist"]
    problems: list[str] = []
    for split in SPLITS:
        problems += check_split(root, split)[0]
    return problems


_MODES = {"rgb": ("RGB", "L"), "semseg": ("P", "L"), "depth": ("L",)}


def check_data_before_training(datasets: dict[str, Any]) -> None:
    """Fail before any training on what is cheap to find: a file whose header is no image of the expected
    mode, or a label whose size is not its rgb image's (headers only, every split); and any problem in the
    test split, decoded in full -- it is otherwise read only after the last epoch. Damage deeper inside a
    train or val file surfaces when it is first read, as a DatasetError naming the file."""
    from PIL import Image

    for dataset in datasets.values():
        modalities = ("rgb", "semseg", "depth") if dataset.has_labels else ("rgb",)
        for index in dataset.indices:
            sizes = {}
            for modality in modalities:
                path = dataset.path(modality, index)
                try:
                    with Image.open(path) as image:
                        sizes[modality], mode = image.size, image.mode
                except (OSError, SyntaxError, ValueError) as exc:
                    raise DatasetError(f"{modality} file {path} is not a readable image: {exc}") from None
                if mode not in _MODES[modality]:
                    raise DatasetError(f"{modality} file {path} has image mode {mode}; expected "
                                       f"{' or '.join(_MODES[modality])}")
            for modality, size in sizes.items():
                if size != sizes["rgb"]:
                    raise DatasetError(f"{dataset.path(modality, index)} is {size[0]}x{size[1]} but "
                                       f"{dataset.path('rgb', index)} is {sizes['rgb'][0]}x{sizes['rgb'][1]}")
    test = datasets["test"]
    problems, _ = check_split(test.root, test.split)
    if problems:
        more = f" (and {len(problems) - 3} more: python -m mtl.data.integrity {test.root})" if len(problems) > 3 else ""
        raise DatasetError("; ".join(problems[:3]) + more)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtl.data.integrity", description="Check a MiniScapes-layout dataset."
    )
    parser.add_argument("root")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        print(f"dataset folder {root} does not exist", file=sys.stderr)
        return 1
    problems, checked = [], 0
    for split in SPLITS:
        split_problems, count = check_split(root, split)
        problems += split_problems
        checked += count
    for problem in problems:
        print(problem)
    print(f"{checked} samples checked, {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
