"""The scene's background: the ground (road, markings, sidewalks, verges), facades along both sides of
the street, the backdrop closing it, and the sky. Each surface gets its depth from the camera geometry."""

from __future__ import annotations

from typing import Any

import numpy as np

from mtl.data.synthetic.classes import BUILDING, FENCE, ROAD, SIDEWALK, SKY, TERRAIN, VEGETATION, WALL
from mtl.data.synthetic.layout import Scene
from mtl.data.synthetic.texture import as_colour, jitter, lod

_BUILDING_PAINTS = [(0.76, 0.68, 0.55), (0.6, 0.33, 0.25), (0.55, 0.55, 0.56), (0.83, 0.8, 0.75), (0.78, 0.62, 0.35)]
_FENCE_PAINTS = [(0.5, 0.37, 0.22), (0.3, 0.42, 0.3), (0.6, 0.6, 0.62)]


def draw_ground(scene: Scene) -> None:
    cam, street, rng = scene.cam, scene.street, scene.rng
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
    grain = scene.noise(x * 1.7, z * 1.7) - 0.5
    rgb = np.empty((*z.shape, 3), np.float32)
    road = as_colour([road_grey, road_grey, road_grey * 1.04])
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
    marking = marking * lod(0.16, z, cam.f, 1.0)
    rgb += (0.88 - rgb) * marking[..., None]

    sidewalk_colour = jitter(rng, (0.62, 0.6, 0.56), 0.06)
    tiles = ((x % 0.6) < 0.05) | ((z % 0.6) < 0.05)
    pavement = sidewalk_colour + 0.05 * grain[..., None] - 0.12 * (tiles * lod(0.6, z, cam.f))[..., None]
    grass = jitter(rng, (0.3, 0.42, 0.17), 0.05)
    patches = scene.noise(x * 0.6 + 17.0, z * 0.6 + 5.0)
    soil = as_colour([0.42, 0.35, 0.22])
    terrain = (
        grass
        + (soil - grass) * (patches[..., None] > 0.65) * 0.6
        + 0.12 * (scene.noise(x * 4 + 3.0, z * 4) - 0.5)[..., None]
    )
    rgb = np.where((label == SIDEWALK)[..., None], pavement, rgb)
    rgb = np.where((label == TERRAIN)[..., None], terrain, rgb)
    scene.canvas.paint(rows, slice(None), np.ones(z.shape, bool), z, label, rgb.astype(np.float32))


def _facade_texture(
    scene: Scene, label: int, base: np.ndarray, along: np.ndarray, up: np.ndarray, depth: np.ndarray
) -> np.ndarray:
    f = scene.cam.f
    stain = (scene.noise(along * 0.8 + 40.0, up * 0.8) - 0.5)[..., None]  # arrays are per-pixel lists
    if label == BUILDING:
        windows = (
            (np.abs((along / 3.0) % 1.0 - 0.5) < 0.22)
            & ((up / 3.1) % 1.0 > 0.35)
            & ((up / 3.1) % 1.0 < 0.82)
            & (up > 1.2)
        )
        glass = as_colour([0.14, 0.17, 0.22]) + 0.1 * (scene.noise(along * 0.3, up * 0.3 + 9.0) - 0.5)[..., None]
        amount = (windows * lod(1.2, depth, f, 2.0))[..., None]
        return base + 0.08 * stain + (glass - base) * amount
    if label == WALL:
        blocks = ((up % 0.5) < 0.05) * lod(0.5, depth, f)
        return base + 0.1 * stain - 0.1 * blocks[..., None]
    if label == FENCE:
        slats = (along % 0.16) < 0.05
        rails = (np.abs(up - 0.3) < 0.05) | (up % 1.0 > 0.93)
        return base * (1 - 0.35 * ((slats | rails) * lod(0.16, depth, f, 1.5))[..., None]) + 0.04 * stain
    # vegetation: leafy noise at two scales, with dark gaps
    leaves = scene.noise(along * 2.2 + 5.0, up * 2.2) * 0.6 + scene.noise(along * 6.0, up * 6.0 + 31.0) * 0.4
    return base * (0.55 + 0.8 * leaves[..., None])


def _facade_base(scene: Scene, label: int) -> np.ndarray:
    rng = scene.rng
    if label == BUILDING:
        return jitter(rng, _BUILDING_PAINTS[rng.integers(len(_BUILDING_PAINTS))], 0.05)
    if label == WALL:
        return jitter(rng, (0.62, 0.6, 0.55), 0.06)
    if label == FENCE:
        return jitter(rng, _FENCE_PAINTS[rng.integers(len(_FENCE_PAINTS))], 0.04)
    return jitter(rng, (0.22, 0.4, 0.14), 0.05)


def _segment_heights(label: int) -> tuple[float, float]:
    return {BUILDING: (6.0, 25.0), WALL: (1.0, 2.8), FENCE: (1.0, 2.2), VEGETATION: (1.0, 2.5)}[label]


def draw_side_plane(scene: Scene, side: int, offset: float, segments: list[tuple[float, float, int, float]]) -> None:
    """A facade plane parallel to the street at ``offset`` m from the road centre, cut into segments along Z."""
    cam = scene.cam
    x_plane = scene.street.road_centre + side * offset
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
        top: np.ndarray = np.full(z.shape, height, np.float32)
        if label == VEGETATION and height > 3.0:  # tree crowns: an irregular top line
            top = top + (scene.noise(z * 0.35, np.full(z.shape, 50.0)) - 0.5) * 0.5 * height
        mask = (up >= 0) & (up < top)
        depth = np.broadcast_to(z, mask.shape)
        rgb = np.zeros((*mask.shape, 3), np.float32)
        rgb[mask] = _facade_texture(scene, label, _facade_base(scene, label), depth[mask], up[mask], depth[mask])
        scene.canvas.paint(slice(None), span, mask, depth, label, rgb)


def draw_facades(scene: Scene, forced: dict[int, list[int]]) -> None:
    """Cut both sides into wall/fence/hedge (inner) and building/tree (outer) segments and draw them."""
    rng, street = scene.rng, scene.street
    for side, info in street.sides.items():
        for plane, choices, probs, lengths in (
            ("inner", (WALL, FENCE, VEGETATION, None), (0.25, 0.25, 0.2, 0.3), (4.0, 25.0)),
            ("outer", (BUILDING, VEGETATION, None), (0.65, 0.25, 0.1), (8.0, 40.0)),
        ):
            offset = info[plane]
            segments: list[list[Any]]  # [z0, z1, label or None], edited in place below
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
                low, high = (4.0, 12.0) if trees else _segment_heights(label)
                drawn.append((z0, z1, label, rng.uniform(low, high)))
            draw_side_plane(scene, side, offset, drawn)


def draw_backdrop(scene: Scene) -> None:
    """Buildings and trees across the end of the street; their tops stay below the upper image rows so sky shows."""
    cam, rng, z_end = scene.cam, scene.rng, scene.street.end
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
        bases.append(_facade_base(scene, label))
    chunk = np.clip(np.searchsorted(np.asarray(bounds), x_cols, side="right") - 1, 0, len(labels) - 1)
    label_col = np.asarray(labels, np.uint8)[chunk][None, :]
    top = np.asarray(heights, np.float32)[chunk][None, :]
    top = np.where(label_col == VEGETATION, top + (scene.noise(x_cols[None, :] * 0.3, 70.0) - 0.5) * 4.0, top)
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
        rgb[where] = _facade_texture(scene, label, base[where], along[where], up[where], depth)
    scene.canvas.paint(slice(None), slice(None), mask, np.float32(z_end), labels_px, rgb)


def draw_sky(scene: Scene) -> None:
    cam = scene.cam
    t = np.clip(cam.ys / max(cam.horizon, 1.0), 0, 1)[:, None, None]
    sky = scene.sky_top * (1 - t) + scene.sky_horizon * t
    clouds = scene.noise(cam.xs[None, :] / cam.w_px * 5.0 + 90.0, cam.ys[:, None] / cam.h_px * 8.0)
    cover = np.clip((clouds - 0.55) * 3.0, 0, 1)[..., None]
    sky = sky * (1 - cover) + as_colour([0.92, 0.92, 0.94]) * cover
    is_sky = scene.canvas.label == SKY
    scene.canvas.rgb[is_sky] = np.broadcast_to(sky, scene.canvas.rgb.shape)[is_sky]
