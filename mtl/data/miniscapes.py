"""The MiniScapes on-disk layout, its encodings, and a dataset that reads it.

Layout: ``<root>/<split>/<modality>/<index>.<ext>`` with splits ``train``, ``val``, ``test`` and
modalities ``rgb`` (JPEG), ``semseg`` (PNG, mode P or L, class ids 0..18, 255 = ignore) and ``depth``
(PNG, mode L, 8-bit disparity, 0 = invalid). Indices are unpadded (``17.jpg``). The reader takes the
indices and image sizes from the files present and never assumes a resolution.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from PIL import Image

from mtl.run.io import atomic_write_bytes

# --------------------------------------------------------------------------- dataset facts

# torchvision's datasets.Cityscapes.classes with ignore_in_eval == False, in train_id order.
CLASS_NAMES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
PALETTE: list[tuple[int, int, int]] = [
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
]
NUM_CLASSES = 19
IGNORE_INDEX = 255

DEPTH_MIN_M = 4.0
DEPTH_MAX_M = 300.0
DEPTH_MEAN_M = 27.0727
DEPTH_STD_M = 29.1264

SPLITS = ("train", "val", "test")
MODALITY_EXTENSIONS = {"rgb": ".jpg", "semseg": ".png", "depth": ".png"}

# Disparity (1/metres) covered by the 8-bit code: code 1 is DEPTH_MAX_M, code 255 is DEPTH_MIN_M.
DISPARITY_MIN = 1.0 / DEPTH_MAX_M
DISPARITY_MAX = 1.0 / DEPTH_MIN_M
DISPARITY_STEP = (DISPARITY_MAX - DISPARITY_MIN) / 254.0


class DatasetError(ValueError):
    """A dataset folder or file that cannot be used; the message names the path and what was expected."""


# --------------------------------------------------------------------------- depth encoding


def _decode_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.float64)
    disparity = DISPARITY_MIN + (codes - 1.0) * DISPARITY_STEP
    depth = np.zeros(256, dtype=np.float64)
    depth[1:] = 1.0 / disparity[1:]
    return depth.astype(np.float32)


# Code -> metres, computed once in float64 so numpy and torch decoders agree bit for bit.
DEPTH_DECODE_TABLE: np.ndarray = _decode_table()
DEPTH_DECODE_TABLE.setflags(write=False)


def decode_depth(encoded: np.ndarray) -> np.ndarray:
    """8-bit disparity codes -> depth in metres (float32); code 0 (invalid) decodes to 0."""
    encoded = np.asarray(encoded)
    if encoded.dtype != np.uint8:
        raise TypeError(f"decode_depth expects uint8 codes, got dtype {encoded.dtype}")
    return DEPTH_DECODE_TABLE[encoded]


def encode_depth(depth_m: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Depth in metres -> 8-bit disparity codes, rounded to the nearest code and clamped to 1..255.

    Depths beyond 300 m (including +inf) become code 1, depths below 4 m (including 0 and negative
    values) code 255, so a prediction always lands on a valid code. Where ``valid`` is given and
    False the code is 0 (invalid), which is how ground truth marks pixels without depth.
    """
    depth = np.asarray(depth_m, dtype=np.float64)
    if np.isnan(depth).any():
        raise ValueError("encode_depth got NaN depth values; expected metres (finite or +inf)")
    with np.errstate(divide="ignore"):
        disparity = 1.0 / np.maximum(depth, 1e-12)
    codes = np.rint((disparity - DISPARITY_MIN) / DISPARITY_STEP + 1.0)
    codes = np.clip(codes, 1, 255).astype(np.uint8)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != codes.shape:
            raise ValueError(f"encode_depth: valid mask shape {valid.shape} differs from depth shape {codes.shape}")
        codes[~valid] = 0
    return codes


def decode_depth_tensor(encoded: torch.Tensor) -> torch.Tensor:
    """Torch version of :func:`decode_depth` (same table, any device)."""
    if encoded.dtype != torch.uint8:
        raise TypeError(f"decode_depth_tensor expects uint8 codes, got dtype {encoded.dtype}")
    table = torch.from_numpy(DEPTH_DECODE_TABLE.copy()).to(encoded.device)
    return table[encoded.long()]


def encode_depth_tensor(depth_m: torch.Tensor) -> torch.Tensor:
    """Torch version of :func:`encode_depth` for predictions: metres -> codes clamped to 1..255."""
    depth = depth_m.detach().to(torch.float64)
    if torch.isnan(depth).any():
        raise ValueError("encode_depth_tensor got NaN depth values; expected metres (finite or +inf)")
    disparity = 1.0 / depth.clamp_min(1e-12)
    codes = torch.round((disparity - DISPARITY_MIN) / DISPARITY_STEP + 1.0)
    return codes.clamp(1, 255).to(torch.uint8)


# --------------------------------------------------------------------------- file readers


def _open_image(path: Union[str, Path], allowed_modes: tuple[str, ...], what: str) -> Image.Image:
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in allowed_modes:
                raise DatasetError(
                    f"{what} file {path} has image mode {image.mode}; expected {' or '.join(allowed_modes)}"
                )
            return image  # pixels are loaded, so closing the file on exit is fine
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{what} file {path} does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetError(f"{what} file {path} cannot be decoded: {exc}") from None


def read_rgb(path: Union[str, Path]) -> np.ndarray:
    """An RGB image as uint8 HxWx3 (a greyscale JPEG is expanded to three channels)."""
    image = _open_image(path, ("RGB", "L"), "rgb")
    return np.array(image.convert("RGB") if image.mode == "L" else image, dtype=np.uint8)


def check_label_ids(ids: np.ndarray, path: Union[str, Path]) -> None:
    """Class ids must be 0..18 or 255 (ignore)."""
    bad = (ids >= NUM_CLASSES) & (ids != IGNORE_INDEX)
    if bad.any():
        values = sorted(int(v) for v in np.unique(ids[bad]))[:8]
        raise DatasetError(f"semseg file {path} holds class ids {values}; expected 0..{NUM_CLASSES - 1} or 255")


def read_semseg(path: Union[str, Path]) -> np.ndarray:
    """A label PNG (mode P: palette indices are the ids; mode L: grey values are the ids) as uint8 HxW."""
    ids = np.array(_open_image(path, ("P", "L"), "semseg"), dtype=np.uint8)
    check_label_ids(ids, path)
    return ids


def read_depth_codes(path: Union[str, Path]) -> np.ndarray:
    """A depth PNG's raw 8-bit disparity codes (uint8 HxW, 0 = invalid)."""
    return np.array(_open_image(path, ("L",), "depth"), dtype=np.uint8)


def read_depth(path: Union[str, Path]) -> np.ndarray:
    """A depth PNG (mode L, 8-bit disparity) as metres, float32 HxW, 0 where invalid."""
    return decode_depth(read_depth_codes(path))


def _flat_palette() -> list[int]:
    flat = [channel for colour in PALETTE for channel in colour]
    return flat + [0] * (768 - len(flat))


_FLAT_PALETTE = _flat_palette()


def encode_semseg_png(ids: np.ndarray) -> bytes:
    """Class ids (HxW, 0..18 or 255) as a palette PNG with the Cityscapes colours."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"semseg ids must be HxW, got shape {ids.shape}")
    if ids.dtype != np.uint8:
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise ValueError(f"semseg ids must fit in 0..255, got range {ids.min()}..{ids.max()}")
        ids = ids.astype(np.uint8)
    check_label_ids(ids, "(in memory)")
    image = Image.fromarray(ids)  # mode L; putpalette turns it into mode P with ids as indices
    image.putpalette(_FLAT_PALETTE)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encode_depth_png(depth_m: np.ndarray, valid: Optional[np.ndarray] = None) -> bytes:
    """Depth in metres as an 8-bit disparity PNG (mode L); see :func:`encode_depth`."""
    codes = encode_depth(depth_m, valid)
    if codes.ndim != 2:
        raise ValueError(f"depth must be HxW, got shape {codes.shape}")
    buffer = io.BytesIO()
    Image.fromarray(codes).save(buffer, format="PNG")
    return buffer.getvalue()


def write_semseg(path: Union[str, Path], ids: Union[np.ndarray, torch.Tensor]) -> None:
    """Write class ids as a Cityscapes-palette PNG, atomically."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    atomic_write_bytes(path, encode_semseg_png(ids))


def write_depth(
    path: Union[str, Path], depth_m: Union[np.ndarray, torch.Tensor], valid: Optional[np.ndarray] = None
) -> None:
    """Write depth in metres as an 8-bit disparity PNG (codes clamped to 1..255, 0 where not valid), atomically."""
    if isinstance(depth_m, torch.Tensor):
        depth_m = depth_m.detach().cpu().to(torch.float64).numpy()
    atomic_write_bytes(path, encode_depth_png(depth_m, valid))


def write_rgb(path: Union[str, Path], rgb: np.ndarray, quality: int = 95) -> None:
    """Write an HxWx3 uint8 image as JPEG, atomically (4:4:4 chroma so thin objects keep their colour)."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be HxWx3 uint8, got shape {rgb.shape} dtype {rgb.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality, subsampling=0)
    atomic_write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------- paths and indices


def sample_path(root: Union[str, Path], split: str, modality: str, index: int) -> Path:
    return Path(root) / split / modality / f"{index}{MODALITY_EXTENSIONS[modality]}"


def list_indices(folder: Path, extension: str) -> list[int]:
    """Sorted indices of the ``<index><extension>`` files in ``folder``; other names are an error."""
    indices = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.endswith(extension):
                continue  # hidden files (editor or OS droppings) and other modalities' files
            stem = name[: -len(extension)]
            if not stem.isdigit() or str(int(stem)) != stem:
                raise DatasetError(f"file {folder / name} is not named <index>{extension} with an unpadded index")
            indices.append(int(stem))
    return sorted(indices)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, index): the augmentation of a sample is the
    same whatever worker draws it, however many workers there are and in whatever order."""
    digest = hashlib.blake2b(f"mtl-sample/{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


Transform = Callable[[dict, torch.Generator], dict]


class MiniScapes(torch.utils.data.Dataset):
    """One split of a MiniScapes-layout folder.

    ``dataset[pos]`` or ``dataset[(epoch, pos)]`` returns ``{"index", "image", "semseg", "depth"}``
    (labels only when the split has them). Before the transform the image is uint8 3xHxW, semseg is
    int64 HxW (255 = ignore) and depth float32 1xHxW in metres (0 = invalid). The transform is called
    as ``transform(sample, generator)`` with a generator seeded from (seed, epoch, file index).
    """

    def __init__(
        self, root: Union[str, Path], split: str, transform: Optional[Transform] = None, seed: int = 0
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.seed = int(seed)
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise DatasetError(
                f"dataset split folder {split_dir} does not exist (expected {self.root}/<split>/rgb/...)"
            )
        rgb_dir = split_dir / "rgb"
        if not rgb_dir.is_dir():
            raise DatasetError(f"dataset folder {rgb_dir} does not exist (expected <index>.jpg files there)")
        self.indices: list[int] = list_indices(rgb_dir, ".jpg")
        if not self.indices:
            raise DatasetError(f"dataset folder {rgb_dir} holds no <index>.jpg files")

        label_dirs = {m: split_dir / m for m in ("semseg", "depth")}
        present = {m for m, d in label_dirs.items() if d.is_dir()}
        if len(present) == 1:
            (have,) = present
            (lacking,) = set(label_dirs) - present
            raise DatasetError(
                f"dataset split {split_dir} has {have}/ but not {lacking}/; expected both label folders or neither"
            )
        self.has_labels = len(present) == 2
        if self.has_labels:
            for modality, folder in label_dirs.items():
                available = set(list_indices(folder, ".png"))
                missing = [i for i in self.indices if i not in available]
                if missing:
                    raise DatasetError(
                        f"rgb file {sample_path(self.root, split, 'rgb', missing[0])} has no matching "
                        f"{sample_path(self.root, split, modality, missing[0])}"
                        + (f" ({len(missing)} rgb files lack a {modality} label)" if len(missing) > 1 else "")
                    )

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"MiniScapes(root={str(self.root)!r}, split={self.split!r}, len={len(self)}, labels={self.has_labels})"

    def path(self, modality: str, index: int) -> Path:
        return sample_path(self.root, self.split, modality, index)

    def load(self, index: int) -> dict[str, Any]:
        """The untransformed sample of file ``index`` (not a position)."""
        rgb = read_rgb(self.path("rgb", index))
        sample: dict[str, Any] = {"index": index, "image": torch.from_numpy(rgb).permute(2, 0, 1).contiguous()}
        if self.has_labels:
            semseg = read_semseg(self.path("semseg", index))
            depth = read_depth(self.path("depth", index))
            for modality, array in (("semseg", semseg), ("depth", depth)):
                if array.shape != rgb.shape[:2]:
                    raise DatasetError(
                        f"{self.path(modality, index)} is {array.shape[1]}x{array.shape[0]} but "
                        f"{self.path('rgb', index)} is {rgb.shape[1]}x{rgb.shape[0]}; expected equal sizes"
                    )
            sample["semseg"] = torch.from_numpy(semseg.astype(np.int64))
            sample["depth"] = torch.from_numpy(depth).unsqueeze(0)
        return sample

    def __getitem__(self, item: Union[int, tuple[int, int]]) -> dict[str, Any]:
        if isinstance(item, (tuple, list)):
            if len(item) != 2:
                raise TypeError(f"MiniScapes item must be a position or (epoch, position), got {item!r}")
            epoch, position = int(item[0]), int(item[1])
        else:
            epoch, position = 0, int(item)
        if not -len(self) <= position < len(self):
            raise IndexError(f"position {position} out of range for {self!r}")
        index = self.indices[position]
        sample = self.load(index)
        if self.transform is not None:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
            sample = self.transform(sample, generator)
        return sample
