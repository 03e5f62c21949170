"""Rendering one image: the background, the objects, then haze, lighting and sensor noise; retried until
every class the image must show is visible."""

from __future__ import annotations

import math

import numpy as np

from mtl.data.miniscapes import CLASS_NAMES, DEPTH_MAX_M, DEPTH_MIN_M
from mtl.data.synthetic.background import draw_backdrop, draw_facades, draw_ground, draw_sky
from mtl.data.synthetic.classes import ALWAYS_PRESENT, FENCE, RARE, SKY, WALL
from mtl.data.synthetic.layout import Scene
from mtl.data.synthetic.objects import draw_objects
from mtl.data.synthetic.params import GENERATOR_VERSION, SPLIT_CODES

MIN_CLASS_PIXELS = 3  # a class an image must show covers at least this many pixels
MAX_ATTEMPTS = 40


def finish(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb uint8 HxWx3, ids uint8 HxW, depth float32 HxW metres with 0 = sky/invalid)."""
    draw_sky(scene)
    canvas, rng = scene.canvas, scene.rng
    is_sky = canvas.label == SKY
    depth = np.where(is_sky, 0.0, np.clip(canvas.depth, DEPTH_MIN_M, DEPTH_MAX_M)).astype(np.float32)
    # Aerial perspective: far surfaces fade towards the horizon colour (a depth cue, as in real scenes).
    visibility = rng.uniform(250.0, 800.0)
    haze = np.where(is_sky, 0.0, 1.0 - np.exp(-depth / visibility))[..., None]
    rgb = canvas.rgb * (1 - haze) + scene.sky_horizon * haze
    rgb = rgb * rng.uniform(0.8, 1.15) * (1 + rng.uniform(-0.05, 0.05, 3)).astype(np.float32)
    rgb = rgb + rng.normal(0.0, 0.02, rgb.shape).astype(np.float32)
    image = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return image, canvas.label.copy(), depth


def draw_scene(rng: np.random.Generator, height: int, width: int, forced: tuple[int, ...]) -> Scene:
    """Draw everything but the sky and the finishing; ``forced`` are the rare classes to place near."""
    scene = Scene(rng, height, width)
    draw_ground(scene)
    wall_side, fence_side = (int(s) for s in rng.choice([-1, 1], size=2))
    forced_facades: dict[int, list[int]] = {}
    forced_facades.setdefault(wall_side, []).append(WALL)
    forced_facades.setdefault(fence_side, []).append(FENCE)
    draw_facades(scene, forced_facades)
    draw_backdrop(scene)
    draw_objects(scene, forced)
    return scene


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
        scene = draw_scene(rng, height, width, forced_classes(index, count))
        rgb, ids, depth = finish(scene)
        pixels = np.bincount(ids.ravel(), minlength=256)
        missing = [CLASS_NAMES[c] for c in required if pixels[c] < MIN_CLASS_PIXELS]
        if not missing:
            return rgb, ids, depth
    raise RuntimeError(
        f"synthetic {split} image {index} ({width}x{height}): classes {missing} stayed hidden after {MAX_ATTEMPTS} "
        f"attempts; the image is probably too small to show them (use at least 64x128)"
    )
