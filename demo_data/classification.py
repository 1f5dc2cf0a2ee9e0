"""Built-in classification demo data: one shape per image, the shape is the class, ImageFolder layout.

`<root>/demo_cls/{train,val}/<shape>/NNNNNN.jpg` with the six shapes the demo sets draw (circle,
square, triangle, ring, star, ellipse). Colour, texture, size, rotation, position and background
are drawn independently of the class, so a classifier has to learn shape. Drawn with the COCO
demo's helpers (same textures and backgrounds); generated once, atomically, keyed by a marker, as
the other demo sets. Same seed -> byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from demo_data.cache import _ensure
from demo_data.coco import DEMO_SHAPES, _paint
from demo_data.drawing import coco_background, finish, write_jpeg
from demo_data.shapes import place_shape, shape_mask, unit_shape

__all__ = ["DEMO_CLS_CLASSES", "ensure_demo_cls"]

DEMO_CLS_CLASSES: tuple[str, ...] = DEMO_SHAPES
GENERATOR_VERSION = 1
_SPLIT_CODES = {"train": 10, "val": 11}  # distinct from the COCO / ADE streams


def _cls_image(rng: np.random.Generator, shape: str, side: int) -> np.ndarray:
    """(side, side, 3) uint8: background + one shape of `shape` covering ~8-35% of the image."""
    img = coco_background(rng, side, side)
    sqrt_area = rng.uniform(0.28, 0.6) * side
    cx, cy = rng.uniform(0.35, 0.65, size=2) * side
    placed = place_shape(unit_shape(rng, shape), sqrt_area, rng.uniform(0, 2 * np.pi), cx, cy)
    _paint(rng, img, shape_mask(placed, side, side))
    return finish(rng, img)


def _generate(out: Path, per_class: dict[str, int], side: int, seed: int) -> None:
    for split, n in per_class.items():
        for c, shape in enumerate(DEMO_CLS_CLASSES):
            folder = out / split / shape
            folder.mkdir(parents=True)
            for i in range(n):
                rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], c, i]))
                write_jpeg(folder / f"{i:06d}.jpg", _cls_image(rng, shape, side))


def ensure_demo_cls(root: Path | None = None, train_per_class: int = 40, val_per_class: int = 12,
                    side: int = 72, seed: int = 0) -> Path:
    """Generate (once) the classification demo set and return its folder `<root>/demo_cls`.

    6 classes x `train_per_class` training and `val_per_class` validation images of side x side
    pixels. root defaults to `demo_data.demo_root()`; regenerated when the `DONE` marker is
    missing or records other parameters.
    """
    if train_per_class < 1 or val_per_class < 1:
        raise ValueError(f"need at least one image per class and split, got {train_per_class}, {val_per_class}")
    marker = {"generator_version": GENERATOR_VERSION, "seed": seed, "train_per_class": train_per_class,
              "val_per_class": val_per_class, "side": side}
    counts = {"train": train_per_class, "val": val_per_class}
    return _ensure(root, "demo_cls", marker, lambda out: _generate(out, counts, side, seed))
