"""How each kind of object looks: drawing functions for people, two-wheelers, vehicles and street furniture.

Each ``*_drawer`` takes its random choices (colours, variants) when it is called and returns a function that
draws the object into a :class:`Sprite`, so the random stream is consumed in a fixed order.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mtl.data.synthetic.classes import BICYCLE, BUS, CAR, LIGHT, MOTORCYCLE, PERSON, POLE, RIDER, SIGN, TRAIN, TRUCK
from mtl.data.synthetic.sprites import Sprite
from mtl.data.synthetic.texture import as_colour, jitter


def person_drawer(rng: np.random.Generator, height: float, label: int = PERSON) -> Callable[[Sprite], None]:
    skin = jitter(rng, [(0.85, 0.68, 0.55), (0.6, 0.43, 0.3), (0.38, 0.26, 0.18)][rng.integers(3)], 0.04)
    shirt = as_colour(rng.uniform(0.1, 0.95, 3))
    trousers = as_colour(rng.uniform(0.05, 0.45, 3))
    hair = as_colour(rng.uniform(0.05, 0.35) * np.array([1.0, 0.8, 0.6]))
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
    tyre = as_colour([0.06, 0.06, 0.06])
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
    tyre, metal = as_colour([0.05, 0.05, 0.05]), as_colour([0.55, 0.55, 0.58])
    for hub_u in (-0.7 * direction, 0.7 * direction):
        sp.add(sp.ring(hub_u, 0.31, 0.18, 0.31), MOTORCYCLE, tyre)
        sp.add(sp.circle(hub_u, 0.31, 0.18), MOTORCYCLE, metal)
    sp.add(sp.rect(-0.25, 0.25, 0.25, 0.55), MOTORCYCLE, metal * 0.7)
    body = ((sp.u - 0.05 * direction) / 0.62) ** 2 + ((sp.v - 0.68) / 0.2) ** 2 < 1
    sp.add(body, MOTORCYCLE, sp.shade(paint, 0.9))
    sp.add(sp.rect(-0.35 if direction > 0 else -0.1, 0.1 if direction > 0 else 0.35, 0.8, 0.9), MOTORCYCLE, tyre * 2)
    sp.add(sp.bar((0.55 * direction, 0.6), (0.5 * direction, 1.05), 0.06), MOTORCYCLE, metal)
    sp.add(sp.circle(0.62 * direction, 0.85, 0.08), MOTORCYCLE, as_colour([0.95, 0.95, 0.8]))


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
        sp.add(sp.circle(head_u, head_v, 0.14), RIDER, as_colour([0.9, 0.9, 0.9]) * clothes.max())
    else:
        sp.add(sp.circle(head_u, head_v, 0.11), RIDER, skin)


def two_wheeler_drawer(
    rng: np.random.Generator, kind: int, ridden: bool
) -> tuple[tuple[float, float, float], Callable[[Sprite], None]]:
    direction = 1.0 if rng.random() < 0.5 else -1.0
    paint = as_colour(rng.uniform(0.05, 0.9, 3))
    clothes = as_colour(rng.uniform(0.1, 0.9, 3))
    skin = jitter(rng, (0.75, 0.58, 0.45), 0.1)
    half = 1.05 if kind == MOTORCYCLE else 0.9

    def draw(sp: Sprite) -> None:
        if kind == MOTORCYCLE:
            _motorcycle_parts(sp, direction, paint)
        else:
            _bicycle_parts(sp, direction, paint)
        if ridden:
            _rider_parts(sp, direction, kind == MOTORCYCLE, clothes, skin)

    return (-half, half, 1.9 if ridden else 1.1), draw


def car_drawer(rng: np.random.Generator, width: float, height: float) -> Callable[[Sprite], None]:
    paint = jitter(rng, [(0.85, 0.85, 0.87), (0.1, 0.1, 0.12), (0.5, 0.5, 0.53), (0.62, 0.08, 0.08),
                          (0.1, 0.2, 0.55), (0.22, 0.3, 0.22), (0.7, 0.62, 0.35)][rng.integers(7)], 0.04)  # fmt: skip
    glass, tyre = as_colour([0.08, 0.1, 0.13]), as_colour([0.04, 0.04, 0.04])
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
        sp.add(lamp, CAR, as_colour([0.8, 0.06, 0.05]))
        sp.add(sp.rect(-0.26, 0.26, 0.3 * height, 0.4 * height), CAR, as_colour([0.92, 0.92, 0.9]))

    return draw


def truck_drawer(rng: np.random.Generator, width: float, height: float) -> Callable[[Sprite], None]:
    box = jitter(
        rng, [(0.92, 0.92, 0.9), (0.85, 0.45, 0.08), (0.55, 0.6, 0.68), (0.2, 0.35, 0.2)][rng.integers(4)], 0.04
    )
    dark, tyre = as_colour([0.18, 0.18, 0.2]), as_colour([0.04, 0.04, 0.04])
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
            as_colour([0.85, 0.1, 0.05]),
        )

    return draw


_BUS_PAINTS = [(0.92, 0.75, 0.08), (0.78, 0.1, 0.1), (0.15, 0.35, 0.75), (0.9, 0.9, 0.88), (0.1, 0.55, 0.3)]


def bus_side_drawer(rng: np.random.Generator, length: float, height: float) -> Callable[[Sprite], None]:
    paint = jitter(rng, _BUS_PAINTS[rng.integers(len(_BUS_PAINTS))], 0.04)
    accent = as_colour(rng.uniform(0.1, 0.9, 3))
    glass, tyre = as_colour([0.1, 0.14, 0.2]), as_colour([0.04, 0.04, 0.04])
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
            sp.add(sp.circle(hub, 0.5, 0.22), BUS, as_colour([0.6, 0.6, 0.62]))

    return draw


def bus_rear_drawer(rng: np.random.Generator, width: float, height: float) -> Callable[[Sprite], None]:
    paint = jitter(rng, _BUS_PAINTS[rng.integers(len(_BUS_PAINTS))], 0.04)
    glass, tyre = as_colour([0.1, 0.14, 0.2]), as_colour([0.04, 0.04, 0.04])
    half = width / 2

    def draw(sp: Sprite) -> None:
        sp.add(sp.rect(-half + 0.05, -half + 0.4, 0, 0.55) | sp.rect(half - 0.4, half - 0.05, 0, 0.55), BUS, tyre)
        sp.add(sp.rect(-half, half, 0.3, height), BUS, sp.shade(paint, height, 0.85))
        sp.add(sp.rect(-half + 0.2, half - 0.2, 1.85, height - 0.45), BUS, glass)
        sp.add(sp.rect(-half + 0.4, half - 0.4, height - 0.38, height - 0.12), BUS, as_colour([0.95, 0.55, 0.05]))
        grille = sp.rect(-half + 0.35, half - 0.35, 0.55, 1.4) & ((sp.v * 8) % 1.0 < 0.35)
        sp.add(grille, BUS, paint * 0.5)
        sp.add(
            sp.rect(-half + 0.05, -half + 0.25, 0.5, 0.8) | sp.rect(half - 0.25, half - 0.05, 0.5, 0.8),
            BUS,
            as_colour([0.85, 0.1, 0.05]),
        )

    return draw


def train_drawer(rng: np.random.Generator, length: float, height: float) -> Callable[[Sprite], None]:
    body = jitter(
        rng, [(0.78, 0.8, 0.83), (0.75, 0.12, 0.1), (0.92, 0.92, 0.9), (0.15, 0.3, 0.55)][rng.integers(4)], 0.03
    )
    stripe = as_colour([(0.8, 0.1, 0.1), (0.1, 0.3, 0.7), (0.95, 0.85, 0.1)][rng.integers(3)])
    glass, bogie = as_colour([0.12, 0.15, 0.2]), as_colour([0.15, 0.15, 0.15])
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


def pole_drawer(rng: np.random.Generator, height: float) -> Callable[[Sprite], None]:
    metal = as_colour(np.full(3, rng.uniform(0.4, 0.62)) + rng.uniform(-0.03, 0.03, 3))
    radius = 0.12

    def draw(sp: Sprite) -> None:
        roundness = np.cos(np.clip(sp.u / radius, -1, 1) * 1.3)[..., None]
        sp.add(sp.rect(-radius, radius, 0, height), POLE, metal[None, None, :] * (0.65 + 0.35 * roundness))
        sp.add(sp.rect(-radius * 1.6, radius * 1.6, 0, 0.3), POLE, metal * 0.8)
        sp.add(sp.rect(-0.25, 0.25, height - 0.12, height), POLE, metal * 0.9)

    return draw


def traffic_light_drawer(rng: np.random.Generator, mast: float) -> Callable[[Sprite], None]:
    housing = as_colour([(0.1, 0.1, 0.1), (0.12, 0.14, 0.1), (0.75, 0.62, 0.1)][rng.integers(3)])
    lit = int(rng.integers(3))
    lamps = [(0.95, 0.1, 0.05), (1.0, 0.75, 0.05), (0.1, 0.95, 0.35)]
    metal = as_colour([0.45, 0.46, 0.48])

    def draw(sp: Sprite) -> None:
        sp.add(sp.rect(-0.07, 0.07, 0, mast), POLE, metal)
        sp.add(sp.rect(-0.21, 0.21, mast, mast + 0.92), LIGHT, housing)
        for k, colour in enumerate(lamps):
            brightness = 1.0 if k == lit else 0.25
            sp.add(sp.circle(0.0, mast + 0.76 - 0.3 * k, 0.11), LIGHT, as_colour(colour) * brightness)

    return draw


def traffic_sign_drawer(rng: np.random.Generator, mast: float) -> Callable[[Sprite], None]:
    kind = int(rng.integers(4))
    metal = as_colour([0.5, 0.5, 0.52])
    red, white, blue, yellow = (
        as_colour(c) for c in ((0.85, 0.08, 0.08), (0.95, 0.95, 0.95), (0.1, 0.3, 0.8), (0.98, 0.8, 0.1))
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
