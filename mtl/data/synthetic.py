"""Procedural street scenes written in the exact MiniScapes layout and encodings.

Each image is a pinhole view down a street: a ground plane (road with lane markings, sidewalks,
grass verges), facades along both sides (walls, fences and hedges in front, buildings and trees
behind), a backdrop closing the street, sky above, and objects standing on the ground at a distance
d, drawn with an image size proportional to 1/d and depth d. Every surface gets its depth from that
geometry and the nearest surface wins at each pixel (a z-buffer), so depth is learnable from the
row below the horizon, from object size and from haze, and each class has its own colours, shapes
and texture (with noise) so segmentation is learnable but not trivial. Sky depth is invalid (0);
everything else lies within 4..300 m.

Everything is drawn from a numpy generator seeded per image from (seed, split, index), so the same
parameters give byte-identical files, whatever order the images are made in.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from filelock import FileLock

from mtl.io import atomic_write_bytes
from mtl.rundir import default_cache_dir as cache_dir
from mtl.data.miniscapes import (
    CLASS_NAMES,
    DEPTH_MAX_M,
    DEPTH_MIN_M,
    NUM_CLASSES,
    DatasetError,
    sample_path,
    write_depth,
    write_rgb,
    write_semseg,
)

logger = logging.getLogger(__name__)

# Bump when the generator's output changes, so cached datasets built by older code are not reused.
GENERATOR_VERSION = 1
MANIFEST_NAME = "synthetic.json"
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(NUM_CLASSES)  # fmt: skip
NONE = 255  # "no surface" inside a sprite

# Every image must show each of these; the rarer classes are spread over the images of a split.
ALWAYS_PRESENT = (ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR)
RARE = (RIDER, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE)
MIN_CLASS_PIXELS = 3
MAX_ATTEMPTS = 40


@dataclasses.dataclass(frozen=True)
class SyntheticParams:
    num_train: int = 240
    num_val: int = 40
    num_test: int = 40
    height: int = 128
    width: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_train", "num_val", "num_test"):
            if getattr(self, name) < 1:
                raise ValueError(f"synthetic {name} must be at least 1, got {getattr(self, name)}")
        if self.height < 32 or self.width < 32:
            raise ValueError(f"synthetic images must be at least 32x32, got {self.width}x{self.height}")
        if self.seed < 0:
            raise ValueError(f"synthetic seed must be >= 0, got {self.seed}")

    @classmethod
    def from_config(cls, cfg: Any) -> "SyntheticParams":
        return cls(
            num_train=cfg.synthetic_num_train,
            num_val=cfg.synthetic_num_val,
            num_test=cfg.synthetic_num_test,
            height=cfg.synthetic_height,
            width=cfg.synthetic_width,
            seed=cfg.synthetic_seed,
        )

    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def short_hash(self, length: int = 10) -> str:
        text = json.dumps({**self.to_dict(), "generator_version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:length]


# =========================================================================== drawing primitives


class ValueNoise:
    """Smooth 2-D value noise in [0, 1] from a random lattice (tiled every ``size`` cells)."""

    def __init__(self, rng: np.random.Generator, size: int = 64) -> None:
        self.size = size
        self.flat = rng.random((size, size)).astype(np.float32).ravel()

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
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


def _lod(feature_m: float, depth: np.ndarray, f: float, pixels: float = 3.0) -> np.ndarray:
    """Fade a texture whose features are ``feature_m`` metres once they shrink below ``pixels`` pixels (no aliasing)."""
    return np.clip(feature_m * f / (depth * pixels), 0.0, 1.0)


def _colour(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _jitter(rng: np.random.Generator, base: Any, amount: float = 0.06) -> np.ndarray:
    return np.clip(_colour(base) + rng.uniform(-amount, amount, 3), 0.0, 1.0).astype(np.float32)


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


# =========================================================================== sprites (objects)


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


def _person_drawer(rng: np.random.Generator, height: float, label: int = PERSON) -> Callable[[Sprite], None]:
    skin = _jitter(rng, [(0.85, 0.68, 0.55), (0.6, 0.43, 0.3), (0.38, 0.26, 0.18)][rng.integers(3)], 0.04)
    shirt = _colour(rng.uniform(0.1, 0.95, 3))
    trousers = _colour(rng.uniform(0.05, 0.45, 3))
    hair = _colour(rng.uniform(0.05, 0.35) * np.array([1.0, 0.8, 0.6]))
    s = height / 1.75

    def draw(sp: Sprite) -> None:
        r = 0.12 * s
        sp.add(
            sp.rect(-0.17 * s, 0.17 * s, 0.0, 0.5 * height) & ~sp.rect(-0.03 * s, 0.03 * s, 0, 0.44 * height),
            label,
            trousers,
        )
        sp.add(sp.rect(-0.2 * s, 0.2 * s, 0.5 * height, height - 2 * r), label, sp.shade(shirt, height))
        sp.add(
            sp.rect(-0.27 * s, -0.2 * s, 0.47 * height, 0.8 * height)
            | sp.rect(0.2 * s, 0.27 * s, 0.47 * height, 0.8 * height),
            label,
            shirt * 0.85,
        )
        sp.add(sp.rect(-0.05 * s, 0.05 * s, height - 2.2 * r, height - 1.6 * r), label, skin)
        sp.add(sp.circle(0.0, height - r, r), label, skin)
        sp.add(sp.circle(0.0, height - 0.75 * r, 0.8 * r) & (sp.v > height - 0.8 * r), label, hair)

    return draw


def _bicycle_parts(sp: Sprite, direction: float, frame: np.ndarray) -> None:
    tyre = _colour([0.06, 0.06, 0.06])
    rear, front = (-0.55 * direction, 0.34), (0.55 * direction, 0.34)
    seat, bracket, head = (-0.2 * direction, 0.85), (-0.05 * direction, 0.32), (0.4 * direction, 0.88)
    for hub in (rear, front):
        sp.add(sp.ring(hub[0], hub[1], 0.28, 0.345), BICYCLE, tyre)
        sp.add(sp.circle(hub[0], hub[1], 0.05), BICYCLE, frame * 0.6)
    for p, q in ((rear, seat), (seat, bracket), (bracket, rear), (bracket, head), (seat, head), (head, front)):
        sp.add(sp.bar(p, q, 0.05), BICYCLE, frame)
    sp.add(
        sp.rect(min(seat[0], seat[0] + 0.15 * direction) - 0.08, max(seat[0], seat[0] + 0.15 * direction), 0.88, 0.93),
        BICYCLE,
        tyre,
    )
    sp.add(sp.bar(head, (0.45 * direction, 0.98), 0.05), BICYCLE, frame * 0.7)


def _motorcycle_parts(sp: Sprite, direction: float, paint: np.ndarray) -> None:
    tyre, metal = _colour([0.05, 0.05, 0.05]), _colour([0.55, 0.55, 0.58])
    for hub_u in (-0.7 * direction, 0.7 * direction):
        sp.add(sp.ring(hub_u, 0.31, 0.18, 0.31), MOTORCYCLE, tyre)
        sp.add(sp.circle(hub_u, 0.31, 0.18), MOTORCYCLE, metal)
    sp.add(sp.rect(-0.25, 0.25, 0.25, 0.55), MOTORCYCLE, metal * 0.7)
    body = ((sp.u - 0.05 * direction) / 0.62) ** 2 + ((sp.v - 0.68) / 0.2) ** 2 < 1
    sp.add(body, MOTORCYCLE, sp.shade(paint, 0.9))
    sp.add(sp.rect(-0.35 if direction > 0 else -0.1, 0.1 if direction > 0 else 0.35, 0.8, 0.9), MOTORCYCLE, tyre * 2)
    sp.add(sp.bar((0.55 * direction, 0.6), (0.5 * direction, 1.05), 0.06), MOTORCYCLE, metal)
    sp.add(sp.circle(0.62 * direction, 0.85, 0.08), MOTORCYCLE, _colour([0.95, 0.95, 0.8]))


def _rider_parts(sp: Sprite, direction: float, on_motorcycle: bool, clothes: np.ndarray, skin: np.ndarray) -> None:
    d = direction
    hips = (-0.2 * d, 0.95 if not on_motorcycle else 0.92)
    shoulders = (0.08 * d, 1.45 if not on_motorcycle else 1.38)
    hands = (0.43 * d, 0.98) if not on_motorcycle else (0.5 * d, 1.05)
    feet = (-0.05 * d, 0.3) if not on_motorcycle else (0.0, 0.45)
    sp.add(sp.bar(hips, feet, 0.14), RIDER, clothes * 0.5)
    sp.add(sp.bar(hips, shoulders, 0.34), RIDER, sp.shade(clothes, 1.5))
    sp.add(sp.bar(shoulders, hands, 0.09), RIDER, clothes * 0.85)
    head_u, head_v = shoulders[0] + 0.07 * d, shoulders[1] + 0.19
    if on_motorcycle:
        sp.add(sp.circle(head_u, head_v, 0.14), RIDER, _colour([0.9, 0.9, 0.9]) * clothes.max())
    else:
        sp.add(sp.circle(head_u, head_v, 0.11), RIDER, skin)


def _two_wheeler(
    rng: np.random.Generator, kind: int, ridden: bool
) -> tuple[tuple[float, float, float], Callable[[Sprite], None]]:
    direction = 1.0 if rng.random() < 0.5 else -1.0
    paint = _colour(rng.uniform(0.05, 0.9, 3))
    clothes = _colour(rng.uniform(0.1, 0.9, 3))
    skin = _jitter(rng, (0.75, 0.58, 0.45), 0.1)
    half = 1.05 if kind == MOTORCYCLE else 0.9

    def draw(sp: Sprite) -> None:
        if kind == MOTORCYCLE:
            _motorcycle_parts(sp, direction, paint)
        else:
            _bicycle_parts(sp, direction, paint)
        if ridden:
            _rider_parts(sp, direction, kind == MOTORCYCLE, clothes, skin)

    return (-half, half, 1.9 if ridden else 1.1), draw


def _car_drawer(rng: np.random.Generator, width: float, height: float) -> Callable[[Sprite], None]:
    paint = _jitter(rng, [(0.85, 0.85, 0.87), (0.1, 0.1, 0.12), (0.5, 0.5, 0.53), (0.62, 0.08, 0.08),
                          (0.1, 0.2, 0.55), (0.22, 0.3, 0.22), (0.7, 0.62, 0.35)][rng.integers(7)], 0.04)  # fmt: skip
    glass, tyre = _colour([0.08, 0.1, 0.13]), _colour([0.04, 0.04, 0.04])
    half, waist = width / 2, 0.6 * height

    def draw(sp: Sprite) -> None:
        taper = 1 - 0.22 * np.clip((sp.v - waist) / (height - waist), 0, 1)
        sp.add(sp.rect(-half + 0.02, -half + 0.3, 0, 0.32) | sp.rect(half - 0.3, half - 0.02, 0, 0.32), CAR, tyre)
        sp.add(sp.rect(-half, half, 0.22, waist), CAR, sp.shade(paint, height))
        sp.add((np.abs(sp.u) < half * taper) & (sp.v >= waist) & (sp.v < height), CAR, sp.shade(paint, height, 0.9))
        sp.add((np.abs(sp.u) < (half - 0.13) * taper) & (sp.v >= waist + 0.05) & (sp.v < height - 0.07), CAR, glass)
        sp.add(sp.rect(-half, half, 0.22, 0.3 * height), CAR, paint * 0.35)
        lamp = sp.rect(-half + 0.04, -half + 0.3, 0.45 * height, 0.56 * height) | sp.rect(
            half - 0.3, half - 0.04, 0.45 * height, 0.56 * height
        )
        sp.add(lamp, CAR, _colour([0.8, 0.06, 0.05]))
        sp.add(sp.rect(-0.26, 0.26, 0.3 * height, 0.4 * height), CAR, _colour([0.92, 0.92, 0.9]))

    return draw


def _truck_drawer(rng: np.random.Generator, width: float, height: float) -> Callable[[Sprite], None]:
    box = _jitter(
        rng, [(0.92, 0.92, 0.9), (0.85, 0.45, 0.08), (0.55, 0.6, 0.68), (0.2, 0.35, 0.2)][rng.integers(4)], 0.04
    )
    dark, tyre = _colour([0.18, 0.18, 0.2]), _colour([0.04, 0.04, 0.04])
    half = width / 2

    def draw(sp: Sprite) -> None:
        sp.add(sp.rect(-half + 0.02, -half + 0.68, 0, 0.95) | sp.rect(half - 0.68, half - 0.02, 0, 0.95), TRUCK, tyre)
        sp.add(sp.rect(-half + 0.2, half - 0.2, 0.55, 1.0), TRUCK, dark)
        sp.add(sp.rect(-half + 0.1, half - 0.1, 0.42, 0.58), TRUCK, dark * 1.6)
        sp.add(sp.rect(-half, half, 1.0, height), TRUCK, sp.shade(box, height, 0.85))
        seams = sp.rect(-0.03, 0.03, 1.0, height) | (
            sp.rect(-half, half, 1.0, height) & (np.abs(np.abs(sp.u) - (half - 0.12)) < 0.03)
        )
        sp.add(seams, TRUCK, box * 0.6)
        for rail in (1.3, 0.5 * (1.0 + height), height - 0.3):
            sp.add(sp.rect(-half + 0.12, half - 0.12, rail - 0.025, rail + 0.025), TRUCK, box * 0.7)
        sp.add(
            sp.rect(-half + 0.05, -half + 0.3, 0.62, 0.8) | sp.rect(half - 0.3, half - 0.05, 0.62, 0.8),
            TRUCK,
            _colour([0.85, 0.1, 0.05]),
        )

    return draw


_BUS_PAINTS = [(0.92, 0.75, 0.08), (0.78, 0.1, 0.1), (0.15, 0.35, 0.75), (0.9, 0.9, 0.88), (0.1, 0.55, 0.3)]


def _bus_side_drawer(rng: np.random.Generator, length: float, height: float) -> Callable[[Sprite], None]:
    paint = _jitter(rng, _BUS_PAINTS[rng.integers(len(_BUS_PAINTS))], 0.04)
    accent = _colour(rng.uniform(0.1, 0.9, 3))
    glass, tyre = _colour([0.1, 0.14, 0.2]), _colour([0.04, 0.04, 0.04])
    half = length / 2
    door_at = rng.uniform(-half + 1.5, half - 2.5)

    def draw(sp: Sprite) -> None:
        sp.add(sp.rect(-half, half, 0.35, height), BUS, sp.shade(paint, height, 0.85))
        pillar = np.abs(((sp.u + half) / 1.35) % 1.0 - 0.5) > 0.42
        sp.add(sp.rect(-half + 0.3, half - 0.3, 1.25, height - 0.35) & ~pillar, BUS, glass)
        sp.add(sp.rect(-half, half, 0.85, 1.0), BUS, accent)
        sp.add(sp.rect(door_at, door_at + 1.1, 0.4, height - 0.35), BUS, glass * 1.4)
        for hub in (-half + 2.3, half - 2.3):
            sp.add(sp.circle(hub, 0.5, 0.5), BUS, tyre)
            sp.add(sp.circle(hub, 0.5, 0.22), BUS, _colour([0.6, 0.6, 0.62]))

    return draw


def _bus_rear_drawer(rng: np.random.Generator, width: float, height: float) -> Callable[[Sprite], None]:
    paint = _jitter(rng, _BUS_PAINTS[rng.integers(len(_BUS_PAINTS))], 0.04)
    glass, tyre = _colour([0.1, 0.14, 0.2]), _colour([0.04, 0.04, 0.04])
    half = width / 2

    def draw(sp: Sprite) -> None:
        sp.add(sp.rect(-half + 0.05, -half + 0.4, 0, 0.55) | sp.rect(half - 0.4, half - 0.05, 0, 0.55), BUS, tyre)
        sp.add(sp.rect(-half, half, 0.3, height), BUS, sp.shade(paint, height, 0.85))
        sp.add(sp.rect(-half + 0.2, half - 0.2, 1.85, height - 0.45), BUS, glass)
        sp.add(sp.rect(-half + 0.4, half - 0.4, height - 0.38, height - 0.12), BUS, _colour([0.95, 0.55, 0.05]))
        grille = sp.rect(-half + 0.35, half - 0.35, 0.55, 1.4) & ((sp.v * 8) % 1.0 < 0.35)
        sp.add(grille, BUS, paint * 0.5)
        sp.add(
            sp.rect(-half + 0.05, -half + 0.25, 0.5, 0.8) | sp.rect(half - 0.25, half - 0.05, 0.5, 0.8),
            BUS,
            _colour([0.85, 0.1, 0.05]),
        )

    return draw


def _train_drawer(rng: np.random.Generator, length: float, height: float) -> Callable[[Sprite], None]:
    body = _jitter(
        rng, [(0.78, 0.8, 0.83), (0.75, 0.12, 0.1), (0.92, 0.92, 0.9), (0.15, 0.3, 0.55)][rng.integers(4)], 0.03
    )
    stripe = _colour([(0.8, 0.1, 0.1), (0.1, 0.3, 0.7), (0.95, 0.85, 0.1)][rng.integers(3)])
    glass, bogie = _colour([0.12, 0.15, 0.2]), _colour([0.15, 0.15, 0.15])
    half, car_len = length / 2, rng.uniform(16.0, 22.0)

    def draw(sp: Sprite) -> None:
        along = (sp.u + half) % car_len
        gap = (along < 0.35) & (sp.u > -half + 1)
        sp.add(sp.rect(-half, half, 0.9, height) & ~gap, TRAIN, sp.shade(body, height, 0.9))
        sp.add(sp.rect(-half, half, height - 0.25, height) & ~gap, TRAIN, body * 0.7)
        window = (np.abs((along / 2.1) % 1.0 - 0.5) < 0.3) & (along > 1.5) & (along < car_len - 1.5)
        sp.add(sp.rect(-half, half, 1.95, 2.85) & window, TRAIN, glass)
        doors = (np.abs(along - 3.5) < 0.65) | (np.abs(along - (car_len - 3.5)) < 0.65)
        sp.add(sp.rect(-half, half, 1.0, 2.95) & doors, TRAIN, glass * 1.5)
        sp.add(sp.rect(-half, half, 1.2, 1.5) & ~gap & ~doors, TRAIN, stripe)
        bogies = (np.abs(along - 2.5) < 1.3) | (np.abs(along - (car_len - 2.5)) < 1.3)
        sp.add(sp.rect(-half, half, 0.15, 0.9) & bogies, TRAIN, bogie)

    return draw


def _pole_drawer(rng: np.random.Generator, height: float) -> Callable[[Sprite], None]:
    metal = _colour(np.full(3, rng.uniform(0.4, 0.62)) + rng.uniform(-0.03, 0.03, 3))
    radius = 0.12

    def draw(sp: Sprite) -> None:
        roundness = np.cos(np.clip(sp.u / radius, -1, 1) * 1.3)[..., None]
        sp.add(sp.rect(-radius, radius, 0, height), POLE, metal[None, None, :] * (0.65 + 0.35 * roundness))
        sp.add(sp.rect(-radius * 1.6, radius * 1.6, 0, 0.3), POLE, metal * 0.8)
        sp.add(sp.rect(-0.25, 0.25, height - 0.12, height), POLE, metal * 0.9)

    return draw


def _traffic_light_drawer(rng: np.random.Generator, mast: float) -> Callable[[Sprite], None]:
    housing = _colour([(0.1, 0.1, 0.1), (0.12, 0.14, 0.1), (0.75, 0.62, 0.1)][rng.integers(3)])
    lit = int(rng.integers(3))
    lamps = [(0.95, 0.1, 0.05), (1.0, 0.75, 0.05), (0.1, 0.95, 0.35)]
    metal = _colour([0.45, 0.46, 0.48])

    def draw(sp: Sprite) -> None:
        sp.add(sp.rect(-0.07, 0.07, 0, mast), POLE, metal)
        sp.add(sp.rect(-0.21, 0.21, mast, mast + 0.92), LIGHT, housing)
        for k, colour in enumerate(lamps):
            brightness = 1.0 if k == lit else 0.25
            sp.add(sp.circle(0.0, mast + 0.76 - 0.3 * k, 0.11), LIGHT, _colour(colour) * brightness)

    return draw


def _traffic_sign_drawer(rng: np.random.Generator, mast: float) -> Callable[[Sprite], None]:
    kind = int(rng.integers(4))
    metal = _colour([0.5, 0.5, 0.52])
    red, white, blue, yellow = (
        _colour(c) for c in ((0.85, 0.08, 0.08), (0.95, 0.95, 0.95), (0.1, 0.3, 0.8), (0.98, 0.8, 0.1))
    )
    r = 0.35

    def draw(sp: Sprite) -> None:
        sp.add(sp.rect(-0.05, 0.05, 0, mast), POLE, metal)
        cv = mast + r
        if kind == 0:  # prohibition: red ring, white centre
            sp.add(sp.circle(0, cv, r), SIGN, red)
            sp.add(sp.circle(0, cv, 0.72 * r), SIGN, white)
        elif kind == 1:  # mandatory: blue disc with a white arrow
            sp.add(sp.circle(0, cv, r), SIGN, blue)
            sp.add(sp.rect(-0.05, 0.05, cv - 0.2, cv + 0.15), SIGN, white)
        elif kind == 2:  # warning: white triangle with red border
            inside = (sp.v >= cv - r) & (np.abs(sp.u) < (cv + r - sp.v) * 0.58)
            sp.add(inside, SIGN, red)
            sp.add((sp.v >= cv - 0.7 * r) & (np.abs(sp.u) < (cv + 0.55 * r - sp.v) * 0.58), SIGN, white)
        else:  # priority road: yellow diamond with white border
            sp.add(np.abs(sp.u) + np.abs(sp.v - cv) < r, SIGN, white)
            sp.add(np.abs(sp.u) + np.abs(sp.v - cv) < 0.72 * r, SIGN, yellow)

    return draw


# =========================================================================== the scene


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


_BUILDING_PAINTS = [(0.76, 0.68, 0.55), (0.6, 0.33, 0.25), (0.55, 0.55, 0.56), (0.83, 0.8, 0.75), (0.78, 0.62, 0.35)]
_FENCE_PAINTS = [(0.5, 0.37, 0.22), (0.3, 0.42, 0.3), (0.6, 0.6, 0.62)]


class SceneRenderer:
    """Draws one image: ground, facades, backdrop, objects; then haze, lighting and sensor noise."""

    def __init__(self, rng: np.random.Generator, height: int, width: int) -> None:
        self.rng = rng
        self.cam = Camera(rng, height, width)
        self.street = Street(rng, self.cam)
        self.canvas = Canvas(height, width)
        self.noise = ValueNoise(rng)
        self.crossing_floor = 0.0  # see crossing_depths
        self.sky_top = _jitter(rng, (0.35, 0.52, 0.8), 0.08)
        self.sky_horizon = _jitter(rng, (0.75, 0.8, 0.86), 0.05)
        if rng.random() < 0.3:  # overcast
            grey = rng.uniform(0.6, 0.8)
            self.sky_top, self.sky_horizon = _colour([grey] * 3), _colour([grey + 0.08] * 3)

    # ------------------------------------------------------------------ backgrounds
    def draw_ground(self) -> None:
        cam, street, rng = self.cam, self.street, self.rng
        first = int(np.searchsorted(cam.ys, cam.horizon + 0.5))
        if first >= cam.h_px:
            return
        rows = slice(first, cam.h_px)
        z = (cam.f * cam.height / (cam.ys[rows] - cam.horizon))[:, None] * np.ones((1, cam.w_px), np.float32)
        x = (cam.xs[None, :] - cam.cx) * z / cam.f
        label = np.full(z.shape, ROAD, np.uint8)
        for side, info in street.sides.items():
            outward = side * (x - street.road_centre) - street.road_half
            start = 0.0
            for band_label, width in info["bands"]:
                label[(outward >= start) & (outward < start + width)] = band_label
                start += width
            label[outward >= start] = info["beyond"]

        road_grey = rng.uniform(0.22, 0.4)
        grain = self.noise(x * 1.7, z * 1.7) - 0.5
        rgb = np.empty((*z.shape, 3), np.float32)
        road = _colour([road_grey, road_grey, road_grey * 1.04])
        rgb[:] = road + 0.08 * grain[..., None]
        # Lane markings: dashed between lanes, solid at the edges (faded where thinner than a pixel).
        lane_w = 2 * street.road_half / street.lanes
        rel = x - (street.road_centre - street.road_half)
        marking = np.zeros(z.shape, np.float32)
        for k in range(1, street.lanes):
            marking = np.maximum(marking, (np.abs(rel - k * lane_w) < 0.08) & ((z / 9.0) % 1.0 < 0.45))
        marking = np.maximum(
            marking, (np.abs(rel - 0.25) < 0.08) | (np.abs(rel - (2 * street.road_half - 0.25)) < 0.08)
        )
        marking = marking * _lod(0.16, z, cam.f, 1.0)
        rgb += (0.88 - rgb) * marking[..., None]

        sidewalk_colour = _jitter(rng, (0.62, 0.6, 0.56), 0.06)
        tiles = ((x % 0.6) < 0.05) | ((z % 0.6) < 0.05)
        pavement = sidewalk_colour + 0.05 * grain[..., None] - 0.12 * (tiles * _lod(0.6, z, cam.f))[..., None]
        grass = _jitter(rng, (0.3, 0.42, 0.17), 0.05)
        patches = self.noise(x * 0.6 + 17.0, z * 0.6 + 5.0)
        soil = _colour([0.42, 0.35, 0.22])
        terrain = (
            grass
            + (soil - grass) * (patches[..., None] > 0.65) * 0.6
            + 0.12 * (self.noise(x * 4 + 3.0, z * 4) - 0.5)[..., None]
        )
        rgb = np.where((label == SIDEWALK)[..., None], pavement, rgb)
        rgb = np.where((label == TERRAIN)[..., None], terrain, rgb)
        self.canvas.paint(rows, slice(None), np.ones(z.shape, bool), z, label, rgb.astype(np.float32))

    def _facade_texture(
        self, label: int, base: np.ndarray, along: np.ndarray, up: np.ndarray, depth: np.ndarray
    ) -> np.ndarray:
        f = self.cam.f
        stain = (self.noise(along * 0.8 + 40.0, up * 0.8) - 0.5)[..., None]  # arrays are per-pixel lists
        if label == BUILDING:
            windows = (
                (np.abs((along / 3.0) % 1.0 - 0.5) < 0.22)
                & ((up / 3.1) % 1.0 > 0.35)
                & ((up / 3.1) % 1.0 < 0.82)
                & (up > 1.2)
            )
            glass = _colour([0.14, 0.17, 0.22]) + 0.1 * (self.noise(along * 0.3, up * 0.3 + 9.0) - 0.5)[..., None]
            amount = (windows * _lod(1.2, depth, f, 2.0))[..., None]
            return base + 0.08 * stain + (glass - base) * amount
        if label == WALL:
            blocks = ((up % 0.5) < 0.05) * _lod(0.5, depth, f)
            return base + 0.1 * stain - 0.1 * blocks[..., None]
        if label == FENCE:
            slats = (along % 0.16) < 0.05
            rails = (np.abs(up - 0.3) < 0.05) | (up % 1.0 > 0.93)
            return base * (1 - 0.35 * ((slats | rails) * _lod(0.16, depth, f, 1.5))[..., None]) + 0.04 * stain
        # vegetation: leafy noise at two scales, with dark gaps
        leaves = self.noise(along * 2.2 + 5.0, up * 2.2) * 0.6 + self.noise(along * 6.0, up * 6.0 + 31.0) * 0.4
        return base * (0.55 + 0.8 * leaves[..., None])

    def _facade_base(self, label: int) -> np.ndarray:
        rng = self.rng
        if label == BUILDING:
            return _jitter(rng, _BUILDING_PAINTS[rng.integers(len(_BUILDING_PAINTS))], 0.05)
        if label == WALL:
            return _jitter(rng, (0.62, 0.6, 0.55), 0.06)
        if label == FENCE:
            return _jitter(rng, _FENCE_PAINTS[rng.integers(len(_FENCE_PAINTS))], 0.04)
        return _jitter(rng, (0.22, 0.4, 0.14), 0.05)

    def _segment_heights(self, label: int) -> tuple[float, float]:
        return {BUILDING: (6.0, 25.0), WALL: (1.0, 2.8), FENCE: (1.0, 2.2), VEGETATION: (1.0, 2.5)}[label]

    def draw_side_plane(self, side: int, offset: float, segments: list[tuple[float, float, int, float]]) -> None:
        """A facade plane parallel to the street at ``offset`` m from the road centre, cut into segments along Z."""
        cam = self.cam
        x_plane = self.street.road_centre + side * offset
        dx = cam.xs - cam.cx
        with np.errstate(divide="ignore", invalid="ignore"):
            z_col = np.where(dx * x_plane > 0, cam.f * x_plane / dx, np.inf).astype(np.float32)
        for z0, z1, label, height in segments:
            cols = np.nonzero((z_col >= z0) & (z_col < z1))[0]
            if cols.size == 0:
                continue
            span = slice(int(cols[0]), int(cols[-1]) + 1)
            z = z_col[span][None, :]
            up = cam.height - (cam.ys[:, None] - cam.horizon) * z / cam.f
            top = np.full(z.shape, height, np.float32)
            if label == VEGETATION and height > 3.0:  # tree crowns: an irregular top line
                top = top + (self.noise(z * 0.35, np.full(z.shape, 50.0)) - 0.5) * 0.5 * height
            mask = (up >= 0) & (up < top)
            depth = np.broadcast_to(z, mask.shape)
            rgb = np.zeros((*mask.shape, 3), np.float32)
            rgb[mask] = self._facade_texture(label, self._facade_base(label), depth[mask], up[mask], depth[mask])
            self.canvas.paint(slice(None), span, mask, depth, label, rgb)

    def plan_side_segments(self, forced: dict[int, list[int]]) -> None:
        """Cut both sides into wall/fence/hedge (inner) and building/tree (outer) segments and draw them."""
        rng, street = self.rng, self.street
        for side, info in street.sides.items():
            for plane, choices, probs, lengths in (
                ("inner", (WALL, FENCE, VEGETATION, None), (0.25, 0.25, 0.2, 0.3), (4.0, 25.0)),
                ("outer", (BUILDING, VEGETATION, None), (0.65, 0.25, 0.1), (8.0, 40.0)),
            ):
                offset = info[plane]
                segments, z = [], 0.5
                while z < street.end:
                    z1 = min(street.end, z + rng.uniform(*lengths))
                    label = choices[rng.choice(len(choices), p=probs)]
                    segments.append([z, z1, label])
                    z = z1
                # Force a class onto a segment surely in view (a little beyond where the plane enters the image).
                for label in forced.get(side, []) if plane == "inner" else []:
                    z_force = min(
                        street.end - 1.0, street.visible_plane_depth(side, offset) * rng.uniform(1.1, 1.6) + 2.0
                    )
                    for segment in segments:
                        if segment[0] <= z_force < segment[1]:
                            segment[0], segment[1], segment[2] = (
                                max(segment[0], z_force - 6.0),
                                max(segment[1], z_force + 4.0),
                                label,
                            )
                            break
                drawn = []
                for z0, z1, label in segments:
                    if label is None:
                        continue
                    trees = plane == "outer" and label == VEGETATION  # taller than the hedges in front
                    low, high = (4.0, 12.0) if trees else self._segment_heights(label)
                    drawn.append((z0, z1, label, rng.uniform(low, high)))
                self.draw_side_plane(side, offset, drawn)

    def draw_backdrop(self) -> None:
        """Buildings and trees across the end of the street; their tops stay below the upper image rows so sky shows."""
        cam, rng, z_end = self.cam, self.rng, self.street.end
        x_lo, x_hi = cam.lateral_range(z_end)
        x_cols = (cam.xs - cam.cx) * z_end / cam.f
        highest = cam.height + (cam.horizon - 0.15 * cam.h_px) * z_end / cam.f
        lowest = min(cam.height + 2.0, highest)
        bounds, labels, heights, bases = [x_lo - 1.0], [], [], []
        while bounds[-1] < x_hi:
            bounds.append(bounds[-1] + rng.uniform(6.0, 25.0))
            label = BUILDING if rng.random() < 0.6 else VEGETATION
            labels.append(label)
            heights.append(rng.uniform(lowest, max(lowest, min(highest, 35.0 if label == BUILDING else 15.0))))
            bases.append(self._facade_base(label))
        chunk = np.clip(np.searchsorted(np.asarray(bounds), x_cols, side="right") - 1, 0, len(labels) - 1)
        label_col = np.asarray(labels, np.uint8)[chunk][None, :]
        top = np.asarray(heights, np.float32)[chunk][None, :]
        top = np.where(label_col == VEGETATION, top + (self.noise(x_cols[None, :] * 0.3, 70.0) - 0.5) * 4.0, top)
        up = cam.height - (cam.ys[:, None] - cam.horizon) * z_end / cam.f
        mask = (up >= 0) & (up < top)
        labels_px = np.broadcast_to(label_col, mask.shape)
        along = np.broadcast_to(x_cols[None, :], mask.shape)
        up = np.broadcast_to(up, mask.shape)
        base = np.broadcast_to(np.asarray(bases, np.float32)[chunk][None, :, :], (*mask.shape, 3))
        rgb = np.zeros((*mask.shape, 3), np.float32)
        for label in (BUILDING, VEGETATION):
            where = mask & (labels_px == label)
            depth = np.full(int(where.sum()), z_end, np.float32)
            rgb[where] = self._facade_texture(label, base[where], along[where], up[where], depth)
        self.canvas.paint(slice(None), slice(None), mask, np.float32(z_end), labels_px, rgb)

    def draw_sky(self) -> None:
        cam = self.cam
        t = np.clip(cam.ys / max(cam.horizon, 1.0), 0, 1)[:, None, None]
        sky = self.sky_top * (1 - t) + self.sky_horizon * t
        clouds = self.noise(cam.xs[None, :] / cam.w_px * 5.0 + 90.0, cam.ys[:, None] / cam.h_px * 8.0)
        cover = np.clip((clouds - 0.55) * 3.0, 0, 1)[..., None]
        sky = sky * (1 - cover) + _colour([0.92, 0.92, 0.94]) * cover
        is_sky = self.canvas.label == SKY
        self.canvas.rgb[is_sky] = np.broadcast_to(sky, self.canvas.rgb.shape)[is_sky]

    # ------------------------------------------------------------------ objects
    def place(
        self,
        zone: Callable[[float], Optional[tuple[float, float]]],
        half_width: float,
        depth_range: tuple[float, float],
        top_in_view: Optional[float] = None,
    ) -> Optional[tuple[float, float]]:
        """Sample a distance (log-uniform) and a lateral position inside ``zone`` and inside the view; with
        ``top_in_view`` the point that many metres above the ground must also be below the image top."""
        rng, cam = self.rng, self.cam
        low, high = depth_range
        if top_in_view is not None and top_in_view > cam.height:
            low = max(low, 1.05 * cam.f * (top_in_view - cam.height) / cam.horizon)
            high = max(high, 1.5 * low)
        high = min(high, self.street.end - 3.0)
        if high <= low:
            return None
        for _ in range(40):
            z = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            allowed = zone(z)
            if allowed is None:
                continue
            view_lo, view_hi = cam.lateral_range(z)
            lo, hi = max(allowed[0], view_lo + 0.5 * half_width), min(allowed[1], view_hi - 0.5 * half_width)
            if lo < hi:
                return float(rng.uniform(lo, hi)), z
        return None

    def road_zone(self, half_width: float) -> Callable[[float], Optional[tuple[float, float]]]:
        street = self.street
        lo, hi = (
            street.road_centre - street.road_half + half_width + 0.2,
            street.road_centre + street.road_half - half_width - 0.2,
        )
        return lambda z: (lo, hi) if lo < hi else None

    def side_zone(
        self, band_label: int, margin: float, kerb_only: bool = False
    ) -> Callable[[float], Optional[tuple[float, float]]]:
        street, side = self.street, (1 if self.rng.random() < 0.5 else -1)
        if kerb_only:  # near the road edge, on whichever band comes first
            total = sum(width for _, width in street.sides[side]["bands"])
            start, end = 0.25, min(0.7, total - 0.1)
        else:
            start, end = street.band_range(side, band_label)
        start, end = start + margin, end - margin
        if end <= start:
            return lambda z: None
        a, b = street.kerb_x(side) + side * start, street.kerb_x(side) + side * end
        return lambda z: (min(a, b), max(a, b))

    def crossing_zone(self) -> Callable[[float], Optional[tuple[float, float]]]:
        return lambda z: (-1e9, 1e9)

    def crossing_depths(self, low: float, high: float) -> tuple[float, float]:
        """Vehicles crossing the street (side views) hide everything behind them, so they stay beyond the
        objects an image must show."""
        low = max(low, self.crossing_floor)
        return low, max(high, 1.5 * low)

    def make_object(self, label: int, near: bool) -> Optional[ObjectSpec]:
        """One object of class ``label``; ``near`` objects stay close enough to be a few pixels wide."""
        rng, f = self.rng, self.cam.f
        far = 100.0

        def close(size_m: float) -> float:
            return float(np.clip(f * size_m / 4.0, 8.0, 40.0)) if near else far

        if label == POLE:
            height = rng.uniform(4.0, 8.0)
            where = self.place(self.side_zone(SIDEWALK, 0.0, kerb_only=True), 0.5, (5.0, close(0.24)))
            return where and ObjectSpec(POLE, *where, (-0.25, 0.25, height), _pole_drawer(rng, height))
        if label == LIGHT:
            mast = rng.uniform(2.4, 4.2)
            where = self.place(
                self.side_zone(SIDEWALK, 0.0, kerb_only=True), 0.5, (6.0, close(0.42)), mast + 0.95 if near else None
            )
            return where and ObjectSpec(LIGHT, *where, (-0.25, 0.25, mast + 0.95), _traffic_light_drawer(rng, mast))
        if label == SIGN:
            mast = rng.uniform(1.9, 2.6)
            where = self.place(
                self.side_zone(SIDEWALK, 0.0, kerb_only=True), 0.8, (5.0, close(0.7)), mast + 0.75 if near else None
            )
            return where and ObjectSpec(SIGN, *where, (-0.4, 0.4, mast + 0.75), _traffic_sign_drawer(rng, mast))
        if label == PERSON:
            height = rng.uniform(1.55, 1.95)
            zone = self.side_zone(SIDEWALK, 0.3) if rng.random() < 0.85 else self.road_zone(0.3)
            where = self.place(zone, 0.6, (5.0, close(0.5)))
            return where and ObjectSpec(PERSON, *where, (-0.3, 0.3, height), _person_drawer(rng, height))
        if label in (RIDER, BICYCLE, MOTORCYCLE):
            kind = label if label != RIDER else (BICYCLE if rng.random() < 0.5 else MOTORCYCLE)
            ridden = label == RIDER or rng.random() < 0.6
            extent, draw = _two_wheeler(rng, kind, ridden)
            zone = self.road_zone(1.0) if ridden else self.side_zone(SIDEWALK, 0.9)
            # A bicycle is mostly thin tubes: a required one stays near enough for them to cover pixels.
            where = self.place(zone, 2.0, (6.0, close(0.5 if kind == BICYCLE else 1.2)))
            return where and ObjectSpec(label, *where, extent, draw)
        if label == CAR:
            width, height = rng.uniform(1.7, 1.95), rng.uniform(1.4, 1.65)
            where = self.place(self.road_zone(width / 2), width, (5.0, close(1.8)))
            return where and ObjectSpec(CAR, *where, (-width / 2, width / 2, height), _car_drawer(rng, width, height))
        if label == TRUCK:
            width, height = rng.uniform(2.3, 2.55), rng.uniform(3.0, 3.8)
            where = self.place(self.road_zone(width / 2), width, (7.0, close(2.4)))
            return where and ObjectSpec(
                TRUCK, *where, (-width / 2, width / 2, height), _truck_drawer(rng, width, height)
            )
        if label == BUS:
            height = rng.uniform(2.9, 3.3)
            if rng.random() < 0.5:
                width = 2.55
                where = self.place(self.road_zone(width / 2), width, (8.0, close(2.5)))
                return where and ObjectSpec(
                    BUS, *where, (-width / 2, width / 2, height), _bus_rear_drawer(rng, width, height)
                )
            length = rng.uniform(10.0, 12.5)
            where = self.place(self.crossing_zone(), 4.0, self.crossing_depths(14.0, max(close(3.0), 20.0)))
            return where and ObjectSpec(
                BUS, *where, (-length / 2, length / 2, height), _bus_side_drawer(rng, length, height)
            )
        if label == TRAIN:
            height, length = rng.uniform(3.6, 4.1), rng.uniform(25.0, 60.0)
            where = self.place(
                self.crossing_zone(), 6.0, self.crossing_depths(18.0, max(close(4.0), 30.0) if near else 90.0)
            )
            return where and ObjectSpec(
                TRAIN, *where, (-length / 2, length / 2, height), _train_drawer(rng, length, height)
            )
        raise ValueError(f"no object drawer for class {label}")

    def screen_box(self, spec: ObjectSpec) -> Optional[tuple[int, int, int, int]]:
        """The object's pixel box (x0, x1, y0, y1) clipped to the image, or None when it is out of view."""
        cam = self.cam
        x0 = max(0, int(math.floor(cam.column(spec.x + spec.u0, spec.z))))
        x1 = min(cam.w_px, int(math.ceil(cam.column(spec.x + spec.u1, spec.z))))
        y0 = max(0, int(math.floor(cam.row(spec.top, spec.z))))
        y1 = min(cam.h_px, int(math.ceil(cam.row(0.0, spec.z))))
        return (x0, x1, y0, y1) if x0 < x1 and y0 < y1 else None

    def draw_object(self, spec: ObjectSpec, box: tuple[int, int, int, int]) -> None:
        cam = self.cam
        x0, x1, y0, y1 = box
        u = (cam.xs[x0:x1] - cam.cx) * spec.z / cam.f - spec.x
        v = cam.height - (cam.ys[y0:y1] - cam.horizon) * spec.z / cam.f
        sprite = Sprite(u, v)
        spec.draw(sprite)
        mask = sprite.label != NONE
        self.canvas.paint(slice(y0, y1), slice(x0, x1), mask, np.float32(spec.z), sprite.label, sprite.rgb)

    @staticmethod
    def hides(
        box: tuple[int, int, int, int], z: float, required: list[tuple[tuple[int, int, int, int], float]]
    ) -> bool:
        """Would an object at ``box``/``z`` cover more than a third of a farther object the image must show?"""
        for (x0, x1, y0, y1), z_required in required:
            if z_required <= z:
                continue
            overlap = max(0, min(x1, box[1]) - max(x0, box[0])) * max(0, min(y1, box[3]) - max(y0, box[2]))
            if overlap * 3 > (x1 - x0) * (y1 - y0):
                return True
        return False

    def draw_objects(self, forced: tuple[int, ...]) -> None:
        """A few objects of each common class and some rare ones. One object of each class the image must
        show is placed near enough to be seen, and other objects are placed so they do not hide it."""
        rng = self.rng
        counts = {POLE: (1, 4), LIGHT: (1, 3), SIGN: (1, 3), PERSON: (1, 6), CAR: (1, 5)}
        wanted: list[tuple[int, bool]] = []
        for label, (lo, hi) in counts.items():
            wanted.append((label, True))
            wanted += [(label, False)] * int(rng.integers(lo - 1, hi))
        for label in RARE:
            if label in forced:
                wanted.append((label, True))
            if rng.random() < 0.3:
                wanted.append((label, False))
        # Required objects first; trains and buses (which may cross the street) last, behind the required ones.
        wanted.sort(key=lambda item: (item[0] in (BUS, TRAIN), not item[1]))
        self.crossing_floor = 0.0
        required: list[tuple[tuple[int, int, int, int], float]] = []
        for label, near in wanted:
            for _ in range(6 if near else 2):
                spec = self.make_object(label, near)
                box = spec and self.screen_box(spec)
                if box is not None and not self.hides(box, spec.z, required):
                    break
            else:
                continue
            if near:
                required.append((box, spec.z))
                if label not in (BUS, TRAIN):
                    self.crossing_floor = max(self.crossing_floor, spec.z + 2.0)
            self.draw_object(spec, box)

    # ------------------------------------------------------------------ finishing
    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rgb uint8 HxWx3, ids uint8 HxW, depth float32 HxW metres with 0 = sky/invalid)."""
        self.draw_sky()
        canvas, rng = self.canvas, self.rng
        is_sky = canvas.label == SKY
        depth = np.where(is_sky, 0.0, np.clip(canvas.depth, DEPTH_MIN_M, DEPTH_MAX_M)).astype(np.float32)
        # Aerial perspective: far surfaces fade towards the horizon colour (a depth cue, as in real scenes).
        visibility = rng.uniform(250.0, 800.0)
        haze = np.where(is_sky, 0.0, 1.0 - np.exp(-depth / visibility))[..., None]
        rgb = canvas.rgb * (1 - haze) + self.sky_horizon * haze
        rgb = rgb * rng.uniform(0.8, 1.15) * (1 + rng.uniform(-0.05, 0.05, 3)).astype(np.float32)
        rgb = rgb + rng.normal(0.0, 0.02, rgb.shape).astype(np.float32)
        image = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
        return image, canvas.label.copy(), depth


def forced_classes(position: int, count: int) -> tuple[int, ...]:
    """The rare classes image ``position`` of a split of ``count`` images must show: a round robin so that
    every split (even of one image) covers all of them."""
    per_image = max(2, math.ceil(len(RARE) / count))
    return tuple(RARE[(position * per_image + k) % len(RARE)] for k in range(per_image))


def render_scene(
    seed: int, split: str, index: int, height: int, width: int, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render image ``index`` of ``split`` (of ``count`` images), retrying with a derived seed until the
    classes it must show are visible (a near object can hide a farther one)."""
    required = ALWAYS_PRESENT + forced_classes(index, count)
    missing: list[str] = []
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng(
            np.random.SeedSequence([GENERATOR_VERSION, seed, SPLIT_CODES[split], index, attempt])
        )
        renderer = SceneRenderer(rng, height, width)
        renderer.draw_ground()
        wall_side, fence_side = (int(s) for s in rng.choice([-1, 1], size=2))
        forced_facades: dict[int, list[int]] = {}
        forced_facades.setdefault(wall_side, []).append(WALL)
        forced_facades.setdefault(fence_side, []).append(FENCE)
        renderer.plan_side_segments(forced_facades)
        renderer.draw_backdrop()
        renderer.draw_objects(forced_classes(index, count))
        rgb, ids, depth = renderer.finish()
        pixels = np.bincount(ids.ravel(), minlength=256)
        missing = [CLASS_NAMES[c] for c in required if pixels[c] < MIN_CLASS_PIXELS]
        if not missing:
            return rgb, ids, depth
    raise RuntimeError(
        f"synthetic {split} image {index} ({width}x{height}): classes {missing} stayed hidden after {MAX_ATTEMPTS} "
        f"attempts; the image is probably too small to show them (use at least 64x128)"
    )


# =========================================================================== writing datasets


def generate(root: Union[str, Path], params: SyntheticParams, progress: bool = False) -> dict[str, Any]:
    """Write the dataset (train/val/test with rgb, semseg and depth), ``statistics.json`` and a manifest into
    ``root`` (which must be empty or absent). Fails if some class is absent from some split."""
    from mtl.data.statistics import write_statistics

    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise DatasetError(f"synthetic dataset target {root} is not empty")
    started = time.perf_counter()
    class_pixels: dict[str, list[int]] = {}
    for split, count in params.split_sizes().items():
        for modality in ("rgb", "semseg", "depth"):
            (root / split / modality).mkdir(parents=True, exist_ok=True)
        totals = np.zeros(256, np.int64)
        for index in range(count):
            rgb, ids, depth = render_scene(params.seed, split, index, params.height, params.width, count)
            write_rgb(sample_path(root, split, "rgb", index), rgb)
            write_semseg(sample_path(root, split, "semseg", index), ids)
            write_depth(sample_path(root, split, "depth", index), depth, valid=depth > 0)
            totals += np.bincount(ids.ravel(), minlength=256)
            if progress and (index + 1) % 50 == 0:
                print(f"  {split}: {index + 1}/{count}", file=sys.stderr)
        absent = [CLASS_NAMES[c] for c in range(NUM_CLASSES) if totals[c] == 0]
        if absent:
            raise RuntimeError(
                f"synthetic {split} split lacks classes {absent}; every split must show all {NUM_CLASSES}"
            )
        class_pixels[split] = totals[:NUM_CLASSES].tolist()
    statistics = write_statistics(root)
    manifest = {
        "generator": "mtl.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "params": params.to_dict(),
        "class_names": list(CLASS_NAMES),
        "class_pixels": class_pixels,
        "seconds": round(time.perf_counter() - started, 2),
    }
    atomic_write_bytes(root / MANIFEST_NAME, (json.dumps(manifest, indent=2) + "\n").encode())
    return {"manifest": manifest, "statistics": statistics}


def read_manifest(root: Union[str, Path]) -> Optional[dict[str, Any]]:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"synthetic manifest {path} cannot be read: {exc}") from None


def _is_complete(root: Path, params: SyntheticParams) -> bool:
    manifest = read_manifest(root)
    if manifest is None:
        return False
    built = (manifest.get("params"), manifest.get("generator_version"))
    if built != (params.to_dict(), GENERATOR_VERSION):
        raise DatasetError(
            f"synthetic dataset {root} was built with params {built[0]} (generator version {built[1]}), "
            f"but {params.to_dict()} (version {GENERATOR_VERSION}) were asked for; use another folder or delete it"
        )
    return True


def build_synthetic(root: Union[str, Path], params: SyntheticParams, progress: bool = False) -> Path:
    """Build the dataset at ``root`` unless it is already there. The build goes to a temporary folder beside
    it that is renamed into place, under a file lock, so a killed build never leaves half a dataset and two
    processes building at once do the work once."""
    root = Path(root).expanduser().absolute()
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if _is_complete(root, params):
            return root
        if root.exists():
            if not root.is_dir() or any(root.iterdir()):
                raise DatasetError(
                    f"{root} exists and is not a synthetic dataset (no {MANIFEST_NAME}); "
                    "expected an empty or missing folder"
                )
            root.rmdir()
        # Left-overs of builds that were killed (only lock holders create these, so none is in use).
        for stale in root.parent.glob(f".{root.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            result = generate(tmp, params, progress=progress)
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("built synthetic dataset %s in %.1f s", root, result["manifest"]["seconds"])
        return root


def default_root(params: SyntheticParams) -> Path:
    return cache_dir() / f"synthetic-{params.short_hash()}"


def ensure_synthetic(cfg: Any) -> Path:
    """The synthetic dataset for ``cfg``: at ``cfg.dataset_root`` if set, else in the cache folder keyed by
    its parameters; built on first use."""
    params = SyntheticParams.from_config(cfg)
    root = Path(cfg.dataset_root) if cfg.dataset_root else default_root(params)
    return build_synthetic(root, params)


def main(argv: Optional[list[str]] = None) -> int:
    defaults = SyntheticParams()
    parser = argparse.ArgumentParser(
        prog="python -m mtl.data.synthetic", description="Write a synthetic MiniScapes-layout dataset."
    )
    parser.add_argument("--root", help="target folder (default: the cache folder keyed by the parameters)")
    for name, value in defaults.to_dict().items():
        parser.add_argument(f"--{name}", type=int, default=value, help=f"default {value}")
    args = parser.parse_args(argv)
    params = SyntheticParams(**{k: getattr(args, k) for k in defaults.to_dict()})
    root = Path(args.root) if args.root else default_root(params)
    started = time.perf_counter()
    try:
        path = build_synthetic(root, params, progress=True)
    except (DatasetError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
