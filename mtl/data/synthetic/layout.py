"""Scene layout: the street's static plan (road, side bands, facade planes, its end) and one image's state."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtl.data.synthetic.classes import SIDEWALK, TERRAIN
from mtl.data.synthetic.geometry import Camera, Canvas
from mtl.data.synthetic.texture import ValueNoise, as_colour, jitter


class Street:
    """The static layout: camera, road and side bands, facade planes, the backdrop closing the street."""

    def __init__(self, rng: np.random.Generator, camera: Camera) -> None:
        self.cam = camera
        self.road_centre = rng.uniform(-1.5, 1.5)
        self.road_half = rng.uniform(3.5, 7.0)
        self.lanes = int(rng.integers(1, 3)) * 2
        self.end = rng.uniform(60.0, 200.0)
        grass_side = 1 if rng.random() < 0.5 else -1
        self.sides: dict[int, dict[str, Any]] = {}
        for side in (-1, 1):
            sidewalk = rng.uniform(1.8, 4.0)
            verge = rng.uniform(1.5, 3.5) if side == grass_side else rng.uniform(0.0, 2.5)
            verge_first = rng.random() < 0.5
            bands = (
                [(TERRAIN, verge), (SIDEWALK, sidewalk)] if verge_first else [(SIDEWALK, sidewalk), (TERRAIN, verge)]
            )
            inner = self.road_half + sidewalk + verge
            self.sides[side] = {
                "bands": bands,
                "inner": inner,  # distance of the wall/fence/hedge plane from the road centre
                "outer": inner + rng.uniform(1.5, 8.0),  # building/tree plane
                "beyond": SIDEWALK if rng.random() < 0.5 else TERRAIN,
            }

    def kerb_x(self, side: int) -> float:
        return self.road_centre + side * self.road_half

    def band_range(self, side: int, band_label: int) -> tuple[float, float]:
        """Distance range (from the road edge, outward) of a side band."""
        start = 0.0
        for label, width in self.sides[side]["bands"]:
            if label == band_label:
                return start, start + width
            start += width
        return start, start

    def visible_plane_depth(self, side: int, offset: float) -> float:
        """The nearest depth at which a side plane ``offset`` metres from the road centre enters the image."""
        x = abs(self.road_centre + side * offset)
        half_width_px = self.cam.cx if side < 0 else self.cam.w_px - self.cam.cx
        return self.cam.f * x / half_width_px


class Scene:
    """One image being drawn: its random stream, camera, street, canvas, noise and sky colours.

    The constructor draws from ``rng`` in a fixed order (camera, street, noise, sky), which the
    generator's byte-identical output depends on."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        self.cam = Camera(rng, height, width)
        self.street = Street(rng, self.cam)
        self.canvas = Canvas(height, width)
        self.noise = ValueNoise(rng)
        self.sky_top = jitter(rng, (0.35, 0.52, 0.8), 0.08)
        self.sky_horizon = jitter(rng, (0.75, 0.8, 0.86), 0.05)
        if rng.random() < 0.3:  # overcast
            grey = rng.uniform(0.6, 0.8)
            self.sky_top, self.sky_horizon = as_colour([grey] * 3), as_colour([grey + 0.08] * 3)
