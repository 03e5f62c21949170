"""Class ids the generator draws with, and which classes every image must show."""

from __future__ import annotations

from mtl.data.miniscapes import NUM_CLASSES

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY,
 PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(NUM_CLASSES)  # fmt: skip
NONE = 255  # "no surface" inside a sprite

# Every image must show each of these; the rarer classes are spread over the images of a split.
ALWAYS_PRESENT = (ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR)
RARE = (RIDER, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE)
