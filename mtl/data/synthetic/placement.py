"""Where objects may stand in a scene: zones across the street (road, a side band, anywhere for vehicles
crossing it), distance limits, and sampling a position inside the view."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from mtl.data.synthetic.layout import Scene

# A zone maps a distance (m) to the lateral range (m) an object may stand in there, or None.
Zone = Callable[[float], Optional[tuple[float, float]]]
FAR_M = 100.0  # the distance limit of objects that need not be visible


class Placement:
    """Positions for the objects of one scene. ``crossing_floor`` is the distance vehicles crossing the
    street must stay beyond (see :meth:`crossing_depths`); it grows as required objects are placed."""

    def __init__(self, scene: Scene) -> None:
        self.rng, self.cam, self.street = scene.rng, scene.cam, scene.street
        self.crossing_floor = 0.0

    def farthest(self, size_m: float, near: bool) -> float:
        """The distance limit of an object: a ``near`` one stays close enough for a part ``size_m`` wide to
        be a few pixels wide."""
        return float(np.clip(self.cam.f * size_m / 4.0, 8.0, 40.0)) if near else FAR_M

    def place(
        self,
        zone: Zone,
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

    def road_zone(self, half_width: float) -> Zone:
        street = self.street
        lo, hi = (
            street.road_centre - street.road_half + half_width + 0.2,
            street.road_centre + street.road_half - half_width - 0.2,
        )
        return lambda z: (lo, hi) if lo < hi else None

    def side_zone(
        self, band_label: int, margin: float, kerb_only: bool = False
    ) -> Zone:
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

    def crossing_zone(self) -> Zone:
        return lambda z: (-1e9, 1e9)

    def crossing_depths(self, low: float, high: float) -> tuple[float, float]:
        """Vehicles crossing the street (side views) hide everything behind them, so they stay beyond the
        objects an image must show."""
        low = max(low, self.crossing_floor)
        return low, max(high, 1.5 * low)

