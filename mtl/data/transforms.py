"""Joint geometric augmentation, image normalisation and depth units.

The training transform composes scale, horizontal flip, tilt (rotation about the image centre),
perspective wiggle and the random crop into one homography and resamples image, semseg and depth
once through it with ``grid_sample``: one interpolation instead of four, only the crop is computed,
and image (bilinear) and labels (nearest) share the exact same sampling grid, so they stay aligned.
Pixels that come from outside the source image get semseg 255 and depth 0 (invalid), never a
made-up label. Every random number comes from the generator passed in, so a sample's augmentation
is a pure function of the seed the dataset derives from (seed, epoch, index).
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F

from mtl.data.miniscapes import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN_255 = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1) * 255.0
_INV_STD_255 = 1.0 / (torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1) * 255.0)

# Random numbers drawn per sample, always all of them, so which ones a setting uses never shifts the rest.
_NUM_DRAWS = 13


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0..255 float) 3xHxW -> float32 standardised with the ImageNet mean and std."""
    # In place on a fresh float copy: allocating new full-size results per operation is many times slower.
    return image.to(torch.float32, copy=True).sub_(_MEAN_255).mul_(_INV_STD_255)


def denormalize_image(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_image` (3xHxW or Nx3xHxW), rounded and clamped to uint8 for display."""
    mean, inv_std = _MEAN_255.to(image.device), _INV_STD_255.to(image.device)
    return (image / inv_std + mean).round().clamp(0, 255).to(torch.uint8)


def _translation(tx: float, ty: float) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)


def homography_from_points(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The 3x3 projective map taking four source points (4x2) to four target points (4x2)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(source.tolist(), target.tolist(), strict=False):
        rows.append([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y])
        rows.append([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y])
        rhs += [u, v]
    solution = torch.linalg.solve(torch.tensor(rows, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64))
    return torch.cat([solution, torch.ones(1, dtype=torch.float64)]).view(3, 3)


def _crop_offset(draw: float, scaled_side: int, crop: int) -> int:
    """Crop start in 0..scaled-crop; when the image is smaller than the crop it lands at a random place inside it."""
    low, high = min(0, scaled_side - crop), max(0, scaled_side - crop)
    return min(high, low + int(draw * (high - low + 1)))


class TrainTransform:
    """Random scale, flip, tilt, perspective wiggle and square crop, then ImageNet normalisation."""

    def __init__(
        self,
        crop_size: int,
        scale_min: float = 1.0,
        scale_max: float = 1.0,
        tilt_max_deg: float = 0.0,
        wiggle_max_ratio: float = 0.0,
        reflect: bool = False,
    ) -> None:
        if crop_size <= 0:
            raise ValueError(f"crop_size must be positive, got {crop_size}")
        if not 0 < scale_min <= scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {scale_min}, {scale_max}")
        if tilt_max_deg < 0 or not 0 <= wiggle_max_ratio < 0.5:
            raise ValueError(
                f"need tilt_max_deg >= 0 and 0 <= wiggle_max_ratio < 0.5, got {tilt_max_deg}, {wiggle_max_ratio}"
            )
        self.crop_size = int(crop_size)
        self.scale_min, self.scale_max = float(scale_min), float(scale_max)
        self.tilt_max_deg = float(tilt_max_deg)
        self.wiggle_max_ratio = float(wiggle_max_ratio)
        self.reflect = bool(reflect)
        # Without scale, tilt or wiggle the warp is an integer shift (plus a flip): slice instead of resampling.
        self.resamples = not (
            self.scale_min == self.scale_max == 1.0 and self.tilt_max_deg == 0 and self.wiggle_max_ratio == 0
        )

    def __repr__(self) -> str:
        return (
            f"TrainTransform(crop_size={self.crop_size}, scale=({self.scale_min}, {self.scale_max}), "
            f"tilt_max_deg={self.tilt_max_deg}, wiggle_max_ratio={self.wiggle_max_ratio}, reflect={self.reflect})"
        )

    def sample_warp(self, height: int, width: int, generator: torch.Generator) -> tuple[torch.Tensor, bool, int, int]:
        """(homography source -> crop coordinates, flipped, crop x offset, crop y offset) for one sample."""
        draws = torch.rand(_NUM_DRAWS, generator=generator, dtype=torch.float64).tolist()
        scale = self.scale_min + draws[0] * (self.scale_max - self.scale_min)
        flip = self.reflect and draws[1] < 0.5
        angle = math.radians((2.0 * draws[2] - 1.0) * self.tilt_max_deg)
        scaled_w, scaled_h = width * scale, height * scale
        offset_x = _crop_offset(draws[11], int(scaled_w), self.crop_size)
        offset_y = _crop_offset(draws[12], int(scaled_h), self.crop_size)

        matrix = torch.diag(torch.tensor([scale, scale, 1.0], dtype=torch.float64))
        if flip:
            matrix = (
                torch.tensor([[-1.0, 0.0, scaled_w], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64) @ matrix
            )
        if angle:
            cos, sin = math.cos(angle), math.sin(angle)
            rotation = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
            centre = (scaled_w / 2.0, scaled_h / 2.0)
            matrix = _translation(*centre) @ rotation @ _translation(-centre[0], -centre[1]) @ matrix
        if self.wiggle_max_ratio:
            corners = torch.tensor(
                [[0.0, 0.0], [scaled_w, 0.0], [scaled_w, scaled_h], [0.0, scaled_h]], dtype=torch.float64
            )
            shifts = (2.0 * torch.tensor(draws[3:11], dtype=torch.float64).view(4, 2) - 1.0) * self.wiggle_max_ratio
            moved = corners + shifts * torch.tensor([scaled_w, scaled_h], dtype=torch.float64)
            matrix = homography_from_points(corners, moved) @ matrix
        matrix = _translation(-offset_x, -offset_y) @ matrix
        return matrix, flip, offset_x, offset_y

    def __call__(self, sample: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        image = sample["image"]
        height, width = image.shape[-2:]
        matrix, flip, offset_x, offset_y = self.sample_warp(height, width, generator)
        out = dict(sample)
        if self.resamples:
            self._resample(sample, out, matrix, height, width)
        else:
            self._slice(sample, out, flip, offset_x, offset_y)
        return out

    def _resample(self, sample: dict, out: dict, matrix: torch.Tensor, height: int, width: int) -> None:
        crop = self.crop_size
        # The source point of every crop pixel centre (the inverse homography, evaluated on the pixel grid).
        (a, b, c), (d, e, f), (g, h, i) = torch.linalg.inv(matrix).tolist()
        centres = torch.arange(crop, dtype=torch.float64) + 0.5
        xs, ys = centres.view(1, crop), centres.view(crop, 1)
        w = g * xs + h * ys + i
        source_x = (a * xs + b * ys + c) / w
        source_y = (d * xs + e * ys + f) / w
        # Only the window the crop reads from (plus a pixel for the bilinear neighbours) is converted and
        # sampled, so the cost follows the crop size, not the source resolution.
        x0, x1 = _window(source_x, width)
        y0, y1 = _window(source_y, height)
        if x0 >= x1 or y0 >= y1:  # the whole crop lies outside the image
            x0, x1, y0, y1 = 0, 1, 0, 1
            source_x = source_y = torch.full_like(w, -1e6)
        # grid_sample's align_corners=False convention: -1 and +1 are the outer edges of the window.
        grid = torch.stack([(source_x - x0) * (2.0 / (x1 - x0)) - 1.0, (source_y - y0) * (2.0 / (y1 - y0)) - 1.0], -1)
        grid = grid.to(torch.float32).unsqueeze(0)

        # Subtracting the mean first makes the fill outside the image 0 after normalisation (the mean colour).
        centred = sample["image"][:, y0:y1, x0:x1].to(torch.float32).sub_(_MEAN_255).unsqueeze(0)
        image = F.grid_sample(centred, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out["image"] = image[0].mul_(_INV_STD_255)
        if "semseg" in sample:
            # semseg + 1 so that the zero fill outside the image becomes -1 and then ignore (255).
            labels = torch.stack(
                [sample["semseg"][y0:y1, x0:x1].to(torch.float32) + 1.0, sample["depth"][0, y0:y1, x0:x1].float()]
            )
            warped = F.grid_sample(
                labels.unsqueeze(0), grid, mode="nearest", padding_mode="zeros", align_corners=False
            )[0]
            semseg = warped[0].round().to(torch.int64) - 1
            semseg[semseg < 0] = IGNORE_INDEX
            out["semseg"] = semseg
            out["depth"] = warped[1:2].contiguous()

    def _slice(self, sample: dict, out: dict, flip: bool, offset_x: int, offset_y: int) -> None:
        crop = self.crop_size

        def cut(tensor: torch.Tensor, fill: Any, dtype: torch.dtype) -> torch.Tensor:
            height, width = tensor.shape[-2:]
            if flip:  # crop x offsets count in the mirrored image
                x0, x1 = max(width - offset_x - crop, 0), min(width - offset_x, width)
            else:
                x0, x1 = max(offset_x, 0), min(offset_x + crop, width)
            y0, y1 = max(offset_y, 0), min(offset_y + crop, height)
            window = tensor[..., y0:y1, x0:x1]
            if flip:
                window = window.flip(-1)
            fill = fill if not torch.is_tensor(fill) else fill.to(dtype)
            result = torch.empty((*tensor.shape[:-2], crop, crop), dtype=dtype)
            result[...] = fill
            # Where the window lands in the crop (the crop may be larger than the image).
            top, left = y0 - offset_y, max(offset_x, 0) - offset_x
            result[..., top : top + window.shape[-2], left : left + window.shape[-1]] = window.to(dtype)
            return result

        # The mean colour outside the image becomes 0 after normalisation, as in the resampling path.
        out["image"] = cut(sample["image"], _MEAN_255, torch.float32).sub_(_MEAN_255).mul_(_INV_STD_255)
        if "semseg" in sample:
            out["semseg"] = cut(sample["semseg"], IGNORE_INDEX, torch.int64)
            out["depth"] = cut(sample["depth"], 0.0, torch.float32)


def _window(coordinate: torch.Tensor, size: int) -> tuple[int, int]:
    """The pixel range [low, high) within 0..size that covers ``coordinate`` and its bilinear neighbours."""
    low = max(0, int(math.floor(coordinate.min().item())) - 1)
    high = min(size, int(math.ceil(coordinate.max().item())) + 1)
    return low, high


class EvalTransform:
    """Crop from the top-left to sides that are multiples of ``multiple`` (the encoder's stride), then normalise."""

    def __init__(self, multiple: int = 32) -> None:
        self.multiple = int(multiple)

    def __repr__(self) -> str:
        return f"EvalTransform(multiple={self.multiple})"

    def __call__(self, sample: dict[str, Any], generator: Optional[torch.Generator] = None) -> dict[str, Any]:
        height, width = sample["image"].shape[-2:]
        crop_h, crop_w = height - height % self.multiple, width - width % self.multiple
        if crop_h == 0 or crop_w == 0:
            raise ValueError(
                f"image {sample.get('index', '?')} is {width}x{height}; "
                f"evaluation needs sides of at least {self.multiple}"
            )
        out = dict(sample)
        out["image"] = normalize_image(sample["image"][..., :crop_h, :crop_w])
        for key in ("semseg", "depth"):
            if key in sample:
                out[key] = sample[key][..., :crop_h, :crop_w].contiguous()
        return out


def build_train_transform(cfg: Any) -> TrainTransform:
    return TrainTransform(
        crop_size=cfg.aug_input_crop_size,
        scale_min=cfg.aug_geom_scale_min,
        scale_max=cfg.aug_geom_scale_max,
        tilt_max_deg=cfg.aug_geom_tilt_max_deg,
        wiggle_max_ratio=cfg.aug_geom_wiggle_max_ratio,
        reflect=cfg.aug_geom_reflect,
    )


def build_eval_transform(cfg: Any) -> EvalTransform:
    """Validation and test: the top-left crop to multiples of the encoder's largest stride (32)."""
    return EvalTransform(multiple=32)


# --------------------------------------------------------------------------- depth units

# Invalid pixels hold depth 0; clamping before the log keeps their (ignored) targets finite.
_LOG_FLOOR_M = 1e-3


class DepthUnit:
    """The depth target the network regresses: standardised metres or standardised natural-log metres."""

    def __init__(self, unit: Literal["meters", "log"], mean: float, std: float) -> None:
        if unit not in ("meters", "log"):
            raise ValueError(f"depth unit must be 'meters' or 'log', got {unit!r}")
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise ValueError(f"depth unit {unit!r} needs a finite mean and a positive std, got mean={mean}, std={std}")
        self.unit, self.mean, self.std = unit, float(mean), float(std)

    def __repr__(self) -> str:
        return f"DepthUnit({self.unit!r}, mean={self.mean}, std={self.std})"

    @classmethod
    def from_statistics(cls, unit: str, stats: dict) -> DepthUnit:
        """Build from a statistics dict (``{"meters": {"mean", "std"}, "log": {"mean", "std"}, ...}``)."""
        try:
            entry = stats[unit]
            return cls(unit, float(entry["mean"]), float(entry["std"]))  # type: ignore[arg-type]
        except (KeyError, TypeError):
            raise ValueError(
                f"depth statistics have no {unit!r} entry with 'mean' and 'std' (keys present: {sorted(stats)})"
            ) from None

    def encode(self, depth_m: torch.Tensor) -> torch.Tensor:
        """Metres -> standardised target (finite everywhere, also at invalid pixels that hold 0)."""
        if self.unit == "log":
            return (torch.log(depth_m.clamp_min(_LOG_FLOOR_M)) - self.mean) / self.std
        return (depth_m - self.mean) / self.std

    def decode(self, prediction: torch.Tensor) -> torch.Tensor:
        """Standardised prediction -> metres (not clamped; the metrics clamp to 4..300 m)."""
        value = prediction * self.std + self.mean
        return torch.exp(value) if self.unit == "log" else value
