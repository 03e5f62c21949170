"""Check a MiniScapes-layout folder file by file before spending GPU hours on it.

Every problem names the file: undecodable or truncated images, wrong image modes, rgb/label size
mismatches, label ids outside 0..18 and 255, rgb files without labels (or labels without rgb) in a
labelled split, badly named files, and missing or empty splits. ``check_data_before_training`` is the
cheap part of this that every training runs first; what it found sound is remembered (``IntegrityCache``)
by file path, size and modification time, so a resume re-checks only the files that changed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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
from mtl.run.io import atomic_write_text
from mtl.run.layout import default_cache_dir


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


class IntegrityCache:
    """The files of one dataset folder that passed :func:`check_data_before_training`, each with the size
    and modification time it had then, and the test splits (by their whole file list) that passed the full
    check. A file whose size or time differs is checked again. Kept in ``<cache dir>/integrity/``; a cache
    file that does not parse counts as empty (everything is checked again and it is rewritten)."""

    VERSION = 1

    def __init__(self, root: Path, folder: Path | None = None):
        self.root = Path(root).resolve()
        key = hashlib.sha256(str(self.root).encode()).hexdigest()[:20]
        self.path = (folder or default_cache_dir() / "integrity") / f"{key}.json"
        self.files: dict[str, list[int]] = {}
        self.test_lists: set[str] = set()
        self.changed = False
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") == self.VERSION and data.get("root") == str(self.root):
                self.files, self.test_lists = dict(data["files"]), set(data["test_lists"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass

    def _key(self, path: Path) -> str:
        return os.path.relpath(path, self.root)

    def unchanged(self, paths: list[Path], stats: list[list[int]]) -> bool:
        return all(self.files.get(self._key(p)) == s for p, s in zip(paths, stats))

    def passed(self, paths: list[Path], stats: list[list[int]]) -> None:
        for path, stat in zip(paths, stats):
            self.files[self._key(path)] = stat
        self.changed = True

    def passed_test_list(self, signature: str) -> None:
        self.test_lists.add(signature)
        self.changed = True

    def save(self) -> None:
        if self.changed:
            text = json.dumps({"version": self.VERSION, "root": str(self.root), "files": self.files,
                               "test_lists": sorted(self.test_lists)})
            try:
                atomic_write_text(self.path, text)
            except OSError:
                return  # a read-only cache (a shared one): the files are checked again next time, nothing lost
            self.changed = False


def _stat(path: Path) -> list[int]:
    try:
        stat = os.stat(path)
    except OSError:
        return [-1, -1]  # never equal to a cached entry: the check below opens it and names the problem
    return [stat.st_size, stat.st_mtime_ns]


def _split_signature(root: Path, split: str) -> str:
    """A hash of every file name, size and modification time in the split's folders."""
    digest = hashlib.sha256()
    split_dir = root / split
    for modality in sorted(MODALITY_EXTENSIONS):
        folder = split_dir / modality
        if not folder.is_dir():
            continue
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            stat = entry.stat()
            digest.update(f"{modality}/{entry.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def check_data_before_training(datasets: dict[str, Any], cache_folder: Path | None = None) -> None:
    """Fail before any training on what is cheap to find: a file whose header is no image of the expected
    mode, or a label whose size is not its rgb image's (headers only, every split); and any problem in the
    test split, decoded in full -- it is otherwise read only after the last epoch. Damage deeper inside a
    train or val file surfaces when it is first read, as a DatasetError naming the file.

    Files that passed before with the same size and modification time are not opened again
    (:class:`IntegrityCache`, under ``cache_folder``, default ``<cache dir>/integrity``)."""
    caches: dict[Path, IntegrityCache] = {}
    try:
        for dataset in datasets.values():
            cache = caches.setdefault(Path(dataset.root).resolve(), IntegrityCache(dataset.root, cache_folder))
            _check_headers(dataset, cache)
        test = datasets["test"]
        cache = caches.setdefault(Path(test.root).resolve(), IntegrityCache(test.root, cache_folder))
        signature = _split_signature(Path(test.root), test.split)
        if signature not in cache.test_lists:
            problems, _ = check_split(test.root, test.split)
            if problems:
                more = (f" (and {len(problems) - 3} more: python -m mtl.data.integrity {test.root})"
                        if len(problems) > 3 else "")
                raise DatasetError("; ".join(problems[:3]) + more)
            cache.passed_test_list(signature)
    finally:  # what passed is kept even when a later file fails: the retry re-checks only the rest
        for cache in caches.values():
            cache.save()


def _check_headers(dataset: Any, cache: IntegrityCache) -> None:
    from PIL import Image

    modalities = ("rgb", "semseg", "depth") if dataset.has_labels else ("rgb",)
    for index in dataset.indices:
        paths = [dataset.path(modality, index) for modality in modalities]
        stats = [_stat(path) for path in paths]
        if cache.unchanged(paths, stats):
            continue
        sizes = {}
        for modality, path in zip(modalities, paths):
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
        cache.passed(paths, stats)


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
