"""Sprites: an object's look drawn in its own metric frame, and where the object stands."""

from __future__ import annotations

from typing import Callable

import numpy as np

from mtl.data.synthetic.classes import NONE


class Sprite:
    """An object's look in its own metric frame: u lateral (m, centred), v height above ground (m)."""

    def __init__(self, u: np.ndarray, v: np.ndarray) -> None:
        self.u, self.v = np.meshgrid(u, v)
        self.label = np.full(self.u.shape, NONE, np.uint8)
        self.rgb = np.zeros((*self.u.shape, 3), np.float32)

    def add(self, mask: np.ndarray, label: int, colour: np.ndarray) -> None:
        self.label[mask] = label
        self.rgb[mask] = colour if colour.ndim == 1 else colour[mask]

    # shapes
    def rect(self, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
        return (self.u >= u0) & (self.u < u1) & (self.v >= v0) & (self.v < v1)

    def circle(self, uc: float, vc: float, r: float) -> np.ndarray:
        return (self.u - uc) ** 2 + (self.v - vc) ** 2 < r * r

    def ring(self, uc: float, vc: float, r_in: float, r_out: float) -> np.ndarray:
        d2 = (self.u - uc) ** 2 + (self.v - vc) ** 2
        return (d2 < r_out * r_out) & (d2 >= r_in * r_in)

    def bar(self, p: tuple[float, float], q: tuple[float, float], thickness: float) -> np.ndarray:
        """A thick line segment from p to q."""
        pu, pv = p
        du, dv = q[0] - pu, q[1] - pv
        t = np.clip(((self.u - pu) * du + (self.v - pv) * dv) / max(du * du + dv * dv, 1e-9), 0, 1)
        return (self.u - pu - t * du) ** 2 + (self.v - pv - t * dv) ** 2 < (thickness / 2) ** 2

    def shade(self, colour: np.ndarray, top: float, low: float = 0.8) -> np.ndarray:
        """Colour lit from above: darker towards the ground."""
        factor = low + (1 - low) * np.clip(self.v / max(top, 1e-6), 0, 1)
        return colour[None, None, :] * factor[..., None]


class ObjectSpec:
    """One object: where it stands, its metric extent, and how it draws itself."""

    def __init__(
        self, label: int, x: float, z: float, extent: tuple[float, float, float], draw: Callable[[Sprite], None]
    ):
        self.label, self.x, self.z = label, x, z
        self.u0, self.u1, self.top = extent
        self.draw = draw
