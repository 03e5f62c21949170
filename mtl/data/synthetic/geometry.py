"""Depth and geometry: the pinhole camera over a flat ground, and the z-buffered canvas."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtl.data.synthetic.classes import SKY


class Canvas:
    """Colour, label and z-buffer of one image; a surface is drawn where it is nearer than what is there."""

    def __init__(self, height: int, width: int) -> None:
        self.rgb = np.zeros((height, width, 3), np.float32)
        self.label = np.full((height, width), SKY, np.uint8)
        self.depth = np.full((height, width), np.inf, np.float32)

    def paint(self, rows: slice, cols: slice, mask: np.ndarray, depth: Any, label: Any, colour: np.ndarray) -> None:
        zbuf = self.depth[rows, cols]
        nearer = mask & (depth < zbuf)
        if not nearer.any():
            return
        zbuf[nearer] = depth if np.isscalar(depth) else np.broadcast_to(depth, nearer.shape)[nearer]
        self.label[rows, cols][nearer] = label if np.isscalar(label) else np.broadcast_to(label, nearer.shape)[nearer]
        self.rgb[rows, cols][nearer] = (
            colour if colour.ndim == 1 else np.broadcast_to(colour, (*nearer.shape, 3))[nearer]
        )


class Camera:
    """Pinhole camera at ``height`` metres over a flat ground, looking along the street (Z forward, X right)."""

    def __init__(self, rng: np.random.Generator, height_px: int, width_px: int) -> None:
        self.h_px, self.w_px = height_px, width_px
        self.f = width_px * rng.uniform(0.8, 1.0)
        self.cx = width_px * (0.5 + rng.uniform(-0.03, 0.03))
        self.horizon = height_px * rng.uniform(0.36, 0.46)
        # The bottom row must see the ground at least 4.3 m away (the depth code starts at 4 m).
        lowest_needed = 4.3 * (height_px - 0.5 - self.horizon) / self.f
        self.height = max(rng.uniform(1.3, 1.8), lowest_needed)
        self.xs = np.arange(width_px, dtype=np.float32) + 0.5
        self.ys = np.arange(height_px, dtype=np.float32) + 0.5

    def column(self, x_m: float, z_m: float) -> float:
        return self.cx + self.f * x_m / z_m

    def row(self, up_m: float, z_m: float) -> float:
        """Image row of a point ``up_m`` metres above the ground at distance ``z_m``."""
        return self.horizon + self.f * (self.height - up_m) / z_m

    def lateral_range(self, z_m: float) -> tuple[float, float]:
        """The X range (metres) the image spans at distance ``z_m``."""
        return (-self.cx * z_m / self.f, (self.w_px - self.cx) * z_m / self.f)
