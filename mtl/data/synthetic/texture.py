"""Texture helpers: smooth value noise, level-of-detail fading and colour jitter."""

from __future__ import annotations

from typing import Any

import numpy as np


class ValueNoise:
    """Smooth 2-D value noise in [0, 1] from a random lattice (tiled every ``size`` cells)."""

    def __init__(self, rng: np.random.Generator, size: int = 64) -> None:
        self.size = size
        self.flat = rng.random((size, size)).astype(np.float32).ravel()

    def __call__(self, u: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
        u, v = np.broadcast_arrays(np.asarray(u, np.float32), np.asarray(v, np.float32))
        iu, iv = np.floor(u), np.floor(v)
        fu, fv = u - iu, v - iv
        fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
        mask = self.size - 1
        i0, j0 = iu.astype(np.int32) & mask, iv.astype(np.int32) & mask
        i1, j1 = (i0 + 1) & mask, ((j0 + 1) & mask) * self.size
        j0 = j0 * self.size
        t = self.flat
        top = t[j0 + i0] * (1 - fu) + t[j0 + i1] * fu
        bottom = t[j1 + i0] * (1 - fu) + t[j1 + i1] * fu
        return top * (1 - fv) + bottom * fv


def lod(feature_m: float, depth: np.ndarray, f: float, pixels: float = 3.0) -> np.ndarray:
    """Fade a texture whose features are ``feature_m`` metres once they shrink below ``pixels`` pixels (no aliasing)."""
    return np.clip(feature_m * f / (depth * pixels), 0.0, 1.0)


def as_colour(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def jitter(rng: np.random.Generator, base: Any, amount: float = 0.06) -> np.ndarray:
    return np.clip(as_colour(base) + rng.uniform(-amount, amount, 3), 0.0, 1.0).astype(np.float32)
