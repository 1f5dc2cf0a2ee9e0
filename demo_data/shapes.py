"""Shapes for the COCO-layout demo set: unit polygons placed on the canvas and rasterised by pycocotools
(so a stored polygon decodes to exactly the visible mask), traced polygons and RLE segmentations.
"""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def _circle(n: int = 48, aspect: float = 1.0) -> np.ndarray:
    a = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([np.cos(a) * aspect, np.sin(a)], axis=1)


def unit_shape(rng: np.random.Generator, name: str) -> list[np.ndarray]:
    """Outline(s) of a shape centred at 0: [outer] or, for the ring, [outer, hole]. (n, 2) each."""
    if name == "circle":
        return [_circle()]
    if name == "ellipse":
        return [_circle(aspect=rng.uniform(1.8, 2.6))]
    if name == "square":
        return [np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])]
    if name == "triangle":
        # Near-equilateral: angles jittered so it never looks like a sliver or a square.
        a = np.pi / 2 + np.arange(3) * 2.0 * np.pi / 3 + rng.uniform(-0.2, 0.2, size=3)
        r = rng.uniform(0.85, 1.0, size=3)
        return [np.stack([r * np.cos(a), r * np.sin(a)], axis=1)]
    if name == "star":
        a = np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        return [np.stack([r * np.cos(a), r * np.sin(a)], axis=1)]
    if name == "ring":
        return [_circle(), _circle() * rng.uniform(0.45, 0.62)]
    raise ValueError(f"unknown shape {name!r}")


def _polygon_area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def place_shape(
    outlines: list[np.ndarray], sqrt_area: float, angle: float, cx: float, cy: float
) -> list[list[float]]:
    """Scale outlines so the shape's area is sqrt_area^2, rotate, translate -> flat COCO polygons.

    Coordinates are rounded to 2 decimals *before* rasterising, so the json holds exactly the
    polygon that was drawn.
    """
    area = _polygon_area(outlines[0]) - sum(_polygon_area(o) for o in outlines[1:])
    scale = sqrt_area / np.sqrt(area)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return [np.round((o * scale) @ rot.T + [cx, cy], 2).ravel().tolist() for o in outlines]


def _rasterise(polygons: list[list[float]], h: int, w: int) -> np.ndarray:
    """(h, w) bool: union of polygons by pycocotools' rasteriser (the one every COCO loader uses)."""
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))).astype(bool)


def shape_mask(shape: list[list[float]], h: int, w: int) -> np.ndarray:
    """(h, w) bool mask of a placed shape: outer outline minus the hole, if any."""
    mask = _rasterise(shape[:1], h, w)
    if len(shape) > 1:
        mask &= ~_rasterise(shape[1:], h, w)
    return mask


def _traced_polygons(mask: np.ndarray) -> list[list[float]]:
    """Polygons along the pixel edges of each 8-connected part of mask (holes are not represented).

    Tracing the 2x nearest-upsampled mask and halving gives vertices at pixel corners (left/top
    edges) and half-pixel steps (right/bottom), which pycocotools rasterises back to exactly the
    same pixels; callers still verify that.
    """
    up = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [(c[:, 0, :].astype(np.float64) / 2.0).ravel().tolist() for c in contours]


def encode_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def segmentation(visible: np.ndarray, full_polygons: list[list[float]] | None) -> list | dict:
    """COCO segmentation of a visible mask: polygons when they reproduce it exactly, else RLE.

    full_polygons is the drawn shape's own polygon (None for rings and crowds): used as is when the
    object is entirely visible and inside the image, otherwise the visible pixels are traced.
    """
    h, w = visible.shape
    candidates: list[list[list[float]]] = []
    if full_polygons is not None:
        xy = np.asarray(full_polygons[0]).reshape(-1, 2)
        if xy[:, 0].min() >= 0 and xy[:, 1].min() >= 0 and xy[:, 0].max() <= w and xy[:, 1].max() <= h:
            candidates.append(full_polygons)
    candidates.append(_traced_polygons(visible))
    for polygons in candidates:
        # A 4-number polygon would be read as a box by frPyObjects; COCO polygons have >= 3 points.
        if (
            polygons
            and all(len(p) >= 6 for p in polygons)
            and np.array_equal(_rasterise(polygons, h, w), visible)
        ):
            return polygons
    return encode_rle(visible)
