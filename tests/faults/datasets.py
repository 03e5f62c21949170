"""Damaged copies of a sound MiniScapes-layout dataset, one kind of damage each.

Every case says which file it damaged and the words an error about it must contain, so a test can demand
that the integrity check and ``mtl-train`` both name the file and the problem.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Damage:
    name: str
    relative_path: str  # the damaged file (or, for an empty split, the folder left empty)
    words: tuple[str, ...]  # what an error about it must say besides the path
    apply: Callable[[Path], None]
    # Files an error may name instead: a size mismatch is one between the rgb image and its labels.
    also_named: tuple[str, ...] = ()

    def named_in(self, message: str, root: Path) -> bool:
        return any(str(root / path) in message for path in (self.relative_path, *self.also_named))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _resize_jpeg(path: Path) -> None:
    with Image.open(path) as image:
        width, height = image.size
    Image.new("RGB", (width // 2 + 8, height // 2), (90, 90, 90)).save(path, format="JPEG")


def _label_out_of_range(path: Path) -> None:
    with Image.open(path) as image:
        ids = np.array(image)
    ids[2:6, 2:6] = 77  # neither a class id (0..18) nor ignore (255)
    Image.fromarray(ids, mode="L").save(path, format="PNG")


def _empty_split(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            path.unlink()


DAMAGES = (
    Damage("truncated PNG", "train/semseg/1.png", ("semseg",), lambda root: _truncate(root / "train/semseg/1.png")),
    Damage("JPEG of the wrong size", "val/rgb/1.jpg", ("64x64", "40x32"),
           lambda root: _resize_jpeg(root / "val/rgb/1.jpg"),
           also_named=("val/semseg/1.png", "val/depth/1.png")),
    Damage("label outside 0..18/255", "train/semseg/2.png", ("77", "0..18"),
           lambda root: _label_out_of_range(root / "train/semseg/2.png")),
    Damage("empty split", "val/rgb", (), lambda root: _empty_split(root / "val")),
    Damage("truncated test JPEG", "test/rgb/0.jpg", ("rgb",), lambda root: _truncate(root / "test/rgb/0.jpg")),
)


def damaged_copy(sound: Path, destination: Path, damage: Damage) -> Path:
    shutil.copytree(sound, destination)
    damage.apply(destination)
    return destination
