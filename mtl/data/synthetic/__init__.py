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

Where things live: ``params`` (the parameters), ``classes`` (class ids), ``texture`` and ``geometry``
(noise, camera, z-buffered canvas), ``layout`` (the street plan and one image's state), ``background``
(ground, facades, backdrop, sky), ``sprites``/``drawers`` (how objects look), ``placement``/``objects``
(where objects stand; the table of object kinds), ``render`` (one image), ``dataset`` (writing and
caching a dataset) and ``cli`` (``python -m mtl.data.synthetic``).
"""

from __future__ import annotations

from mtl.data.synthetic.cli import main
from mtl.data.synthetic.dataset import (
    MANIFEST_NAME,
    BuildStopped,
    build_synthetic,
    cache_dir,
    default_root,
    ensure_synthetic,
    generate,
    read_manifest,
)
from mtl.data.synthetic.params import GENERATOR_VERSION, SyntheticParams
from mtl.data.synthetic.render import forced_classes, render_scene

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "BuildStopped",
    "SyntheticParams",
    "build_synthetic",
    "cache_dir",
    "default_root",
    "ensure_synthetic",
    "forced_classes",
    "generate",
    "main",
    "read_manifest",
    "render_scene",
]
