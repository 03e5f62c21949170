"""Objects standing on the ground: the table of object kinds (where each stands, how big it is and which
drawer paints it) and drawing a scene's objects so that those the image must show stay visible."""

from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from mtl.data.miniscapes import CLASS_NAMES
from mtl.data.synthetic.classes import (
    BICYCLE,
    BUS,
    CAR,
    LIGHT,
    MOTORCYCLE,
    NONE,
    PERSON,
    POLE,
    RARE,
    RIDER,
    SIDEWALK,
    SIGN,
    TRAIN,
    TRUCK,
)
from mtl.data.synthetic.drawers import (
    bus_rear_drawer,
    bus_side_drawer,
    car_drawer,
    person_drawer,
    pole_drawer,
    traffic_light_drawer,
    traffic_sign_drawer,
    train_drawer,
    truck_drawer,
    two_wheeler_drawer,
)
from mtl.data.synthetic.layout import Scene
from mtl.data.synthetic.placement import Placement
from mtl.data.synthetic.sprites import ObjectSpec, Sprite

# Makes one object of a class (its position, extent and drawer) or None when no position was found;
# ``near`` objects stay close enough to be a few pixels wide. Each maker draws from the scene's random
# stream in a fixed order, which the generator's byte-identical output depends on.
ObjectMaker = Callable[[Placement, int, bool], Optional[ObjectSpec]]
Box = tuple[int, int, int, int]  # pixel box x0, x1, y0, y1

OBJECT_KINDS: dict[int, ObjectMaker] = {}


def object_kind(*labels: int) -> Callable[[ObjectMaker], ObjectMaker]:
    """Register the decorated maker for the classes ``labels``."""

    def register(maker: ObjectMaker) -> ObjectMaker:
        for label in labels:
            if label in OBJECT_KINDS:
                raise ValueError(f"object kind {CLASS_NAMES[label]} is registered twice")
            OBJECT_KINDS[label] = maker
        return maker

    return register


@object_kind(POLE)
def _pole(at: Placement, label: int, near: bool) -> Optional[ObjectSpec]:
    height = at.rng.uniform(4.0, 8.0)
    where = at.place(at.side_zone(SIDEWALK, 0.0, kerb_only=True), 0.5, (5.0, at.farthest(0.24, near)))
    return where and ObjectSpec(label, *where, (-0.25, 0.25, height), pole_drawer(at.rng, height))


@object_kind(LIGHT)
def _traffic_light(at: Placement, label: int, near: bool) -> Optional[ObjectSpec]:
    mast = at.rng.uniform(2.4, 4.2)
    zone = at.side_zone(SIDEWALK, 0.0, kerb_only=True)
    where = at.place(zone, 0.5, (6.0, at.farthest(0.42, near)), mast + 0.95 if near else None)
    return where and ObjectSpec(label, *where, (-0.25, 0.25, mast + 0.95), traffic_light_drawer(at.rng, mast))


@object_kind(SIGN)
def _traffic_sign(at: Placement, label: int, near: bool) -> Optional[ObjectSpec]:
    mast = at.rng.uniform(1.9, 2.6)
    zone = at.side_zone(SIDEWALK, 0.0, kerb_only=True)
    where = at.place(zone, 0.8, (5.0, at.farthest(0.7, near)), mast + 0.75 if near else None)
    return where and ObjectSpec(label, *where, (-0.4, 0.4, mast + 0.75), traffic_sign_drawer(at.rng, mast))


@object_kind(PERSON)
def _person(at: Placement, label: int, near: bool) -> Optional[ObjectSpec]:
    height = at.rng.uniform(1.55, 1.95)
    zone = at.side_zone(SIDEWALK, 0.3) if at.rng.random() < 0.85 else at.road_zone(0.3)
    where = at.place(zone, 0.6, (5.0, at.farthest(0.5, near)))
    return where and ObjectSpec(label, *where, (-0.3, 0.3, height), person_drawer(at.rng, height))


@object_kind(RIDER, BICYCLE, MOTORCYCLE)
def _two_wheeler(at: Placement, label: int, near: bool) -> Optional[ObjectSpec]:
    """A bicycle or motorcycle; a rider is drawn on one of either."""
    rng = at.rng
    kind = label if label != RIDER else (BICYCLE if rng.random() < 0.5 else MOTORCYCLE)
    ridden = label == RIDER or rng.random() < 0.6
    extent, draw = two_wheeler_drawer(rng, kind, ridden)
    zone = at.road_zone(1.0) if ridden else at.side_zone(SIDEWALK, 0.9)
    # A bicycle is mostly thin tubes: a required one stays near enough for them to cover pixels.
    where = at.place(zone, 2.0, (6.0, at.farthest(0.5 if kind == BICYCLE else 1.2, near)))
    return where and ObjectSpec(label, *where, extent, draw)


@object_kind(CAR)
def _car(at: Placement, label: int, near: bool) -> Optional[ObjectSpec]:
    width, height = at.rng.uniform(1.7, 1.95), at.rng.uniform(1.4, 1.65)
    where = at.place(at.road_zone(width / 2), width, (5.0, at.farthest(1.8, near)))
    return where and ObjectSpec(label, *where, (-width / 2, width / 2, height), car_drawer(at.rng, width, height))


@object_kind(TRUCK)
def _truck(at: Placement, label: int, near: bool) -> Optional[ObjectSpec]:
    width, height = at.rng.uniform(2.3, 2.55), at.rng.uniform(3.0, 3.8)
    where = at.place(at.road_zone(width / 2), width, (7.0, at.farthest(2.4, near)))
    return where and ObjectSpec(label, *where, (-width / 2, width / 2, height), truck_drawer(at.rng, width, height))


@object_kind(BUS)
def _bus(at: Placement, label: int, near: bool) -> Optional[ObjectSpec]:
    """A bus seen from behind in a lane, or from the side crossing the street."""
    rng = at.rng
    height = rng.uniform(2.9, 3.3)
    if rng.random() < 0.5:
        width = 2.55
        where = at.place(at.road_zone(width / 2), width, (8.0, at.farthest(2.5, near)))
        return where and ObjectSpec(
            label, *where, (-width / 2, width / 2, height), bus_rear_drawer(rng, width, height)
        )
    length = rng.uniform(10.0, 12.5)
    where = at.place(at.crossing_zone(), 4.0, at.crossing_depths(14.0, max(at.farthest(3.0, near), 20.0)))
    return where and ObjectSpec(label, *where, (-length / 2, length / 2, height), bus_side_drawer(rng, length, height))


@object_kind(TRAIN)
def _train(at: Placement, label: int, near: bool) -> Optional[ObjectSpec]:
    """A train crossing the street."""
    rng = at.rng
    height, length = rng.uniform(3.6, 4.1), rng.uniform(25.0, 60.0)
    depths = at.crossing_depths(18.0, max(at.farthest(4.0, near), 30.0) if near else 90.0)
    where = at.place(at.crossing_zone(), 6.0, depths)
    return where and ObjectSpec(label, *where, (-length / 2, length / 2, height), train_drawer(rng, length, height))


def make_object(at: Placement, label: int, near: bool) -> Optional[ObjectSpec]:
    """One object of class ``label`` (see ``ObjectMaker``)."""
    maker = OBJECT_KINDS.get(label)
    if maker is None:
        known = ", ".join(CLASS_NAMES[k] for k in sorted(OBJECT_KINDS))
        raise ValueError(f"no object kind for class {label} ({CLASS_NAMES[label]}); object kinds: {known}")
    return maker(at, label, near)


def screen_box(scene: Scene, spec: ObjectSpec) -> Optional[Box]:
    """The object's pixel box clipped to the image, or None when it is out of view."""
    cam = scene.cam
    x0 = max(0, int(math.floor(cam.column(spec.x + spec.u0, spec.z))))
    x1 = min(cam.w_px, int(math.ceil(cam.column(spec.x + spec.u1, spec.z))))
    y0 = max(0, int(math.floor(cam.row(spec.top, spec.z))))
    y1 = min(cam.h_px, int(math.ceil(cam.row(0.0, spec.z))))
    return (x0, x1, y0, y1) if x0 < x1 and y0 < y1 else None


def draw_object(scene: Scene, spec: ObjectSpec, box: Box) -> None:
    cam = scene.cam
    x0, x1, y0, y1 = box
    u = (cam.xs[x0:x1] - cam.cx) * spec.z / cam.f - spec.x
    v = cam.height - (cam.ys[y0:y1] - cam.horizon) * spec.z / cam.f
    sprite = Sprite(u, v)
    spec.draw(sprite)
    mask = sprite.label != NONE
    scene.canvas.paint(slice(y0, y1), slice(x0, x1), mask, np.float32(spec.z), sprite.label, sprite.rgb)


def hides(box: Box, z: float, required: list[tuple[Box, float]]) -> bool:
    """Would an object at ``box``/``z`` cover more than a third of a farther object the image must show?"""
    for (x0, x1, y0, y1), z_required in required:
        if z_required <= z:
            continue
        overlap = max(0, min(x1, box[1]) - max(x0, box[0])) * max(0, min(y1, box[3]) - max(y0, box[2]))
        if overlap * 3 > (x1 - x0) * (y1 - y0):
            return True
    return False


def draw_objects(scene: Scene, forced: tuple[int, ...]) -> None:
    """A few objects of each common class and some rare ones. One object of each class the image must
    show is placed near enough to be seen, and other objects are placed so they do not hide it."""
    rng = scene.rng
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
    at = Placement(scene)
    required: list[tuple[Box, float]] = []
    for label, near in wanted:
        for _ in range(6 if near else 2):
            spec = make_object(at, label, near)
            box = screen_box(scene, spec) if spec is not None else None
            if spec is not None and box is not None and not hides(box, spec.z, required):
                break
        else:
            continue
        if near:
            required.append((box, spec.z))
            if label not in (BUS, TRAIN):
                at.crossing_floor = max(at.crossing_floor, spec.z + 2.0)
        draw_object(scene, spec, box)
