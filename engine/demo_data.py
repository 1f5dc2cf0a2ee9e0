"""Built-in demo datasets: a tiny COCO-layout instance set and a tiny ADE20k-layout semantic set.

Both are drawn procedurally from a seed, so the whole pipeline (pretraining, Mask R-CNN, UperNet,
evaluation) runs offline in minutes on a CPU, and tests get real files in the real layouts.

COCO part (``<root>/demo_coco``): six shape classes with COCO-like non-contiguous ids. The SHAPE
decides the class; colour and texture (solid, stripes, checker, noise) are drawn independently, so
a detector has to learn shape and a self-supervised model sees structure shared across images.
Objects are small / medium / large in COCO's sense (area < 32^2, < 96^2, >= 96^2), may leave the
image, and occlude each other (later over earlier): every mask is the *visible* part and ``area`` is
its pixel count. A segmentation is stored as a polygon when a polygon reproduces the visible mask
exactly under pycocotools' rasteriser (whole shapes, and occluded or cut shapes without holes,
traced along pixel edges, possibly in several parts); otherwise (rings, visible parts with holes)
as compressed RLE. A few ``iscrowd=1`` RLE regions cover clusters of small shapes, as COCO's crowds
do, and some images are empty.

ADE part (``<root>/demo_ade/ADEChallengeData2016``): outdoor-like scenes with stuff (sky, building,
tree, grass, road, water) and things (ball, box), each class with its own noisy texture family.
Label 0 ("other", ignored in training) marks unlabelled clutter and, in some images, thin bands
along region borders, as in ADE20k.

Generation takes a few seconds, writes into a temporary folder and renames it into place when
complete, with a ``DONE`` marker holding the generator version and parameters: a dataset is
regenerated only when that marker is missing or different. Same seed -> byte-identical files.
"""

from __future__ import annotations

import argparse
import colorsys
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

# Bump when the drawn content or the layout changes: existing caches then regenerate.
GENERATOR_VERSION = 1
MARKER_NAME = "DONE"

DEMO_COCO_CATEGORIES: tuple[dict, ...] = (
    {"id": 1, "name": "circle", "supercategory": "round"},
    {"id": 2, "name": "square", "supercategory": "polygon"},
    {"id": 3, "name": "triangle", "supercategory": "polygon"},
    {"id": 5, "name": "ring", "supercategory": "round"},
    {"id": 7, "name": "star", "supercategory": "polygon"},
    {"id": 9, "name": "ellipse", "supercategory": "round"},
)
# ADE convention: label 0 = other / ignore, label i (1-based) = DEMO_ADE_CLASSES[i - 1].
DEMO_ADE_CLASSES: tuple[str, ...] = ("sky", "building", "tree", "grass", "road", "water", "ball", "box")

IMAGE_SIDES = (128, 144, 160, 176, 192)  # every image side is one of these (non-square allowed)
OBJECT_TEXTURES = ("solid", "stripes", "checker", "noise")
JPEG_QUALITY = 95

# sqrt(area) ranges of the full shape for COCO's size buckets (small < 32, medium < 96, large >= 96).
_SIZE_RANGES = {"small": (9.0, 30.0), "medium": (36.0, 90.0), "large": (105.0, 135.0)}
_EMPTY_EVERY, _EMPTY_AT = 16, 3  # image index i is empty when i % 16 == 3 (so i = 3 in any set of >= 4)
_CROWD_EVERY, _CROWD_AT = 8, 5  # image index i holds a crowd region when i % 8 == 5
_SPLIT_CODES = {"coco_train": 0, "coco_val": 1, "ade_train": 2, "ade_val": 3}
_DATE = "2024-01-01 00:00:00"  # fixed, so the json is byte-identical between runs

_ADE = {name: i + 1 for i, name in enumerate(DEMO_ADE_CLASSES)}


def demo_root() -> Path:
    """Folder that holds the demo datasets: ``$TARGET_SSL_CACHE/demo`` (default ``~/.cache/target_ssl``)."""
    return Path(os.environ.get("TARGET_SSL_CACHE", "~/.cache/target_ssl")).expanduser() / "demo"


# --------------------------------------------------------------------------------------------------
# Drawing primitives (all float32 RGB in [0, 255], vectorised over pixels)
# --------------------------------------------------------------------------------------------------


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """One independent stream per image: the first N images do not depend on how many follow."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width), each side drawn from IMAGE_SIDES."""
    h, w = rng.choice(IMAGE_SIDES, size=2)
    return int(h), int(w)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] -> (3,) RGB float32 in [0, 255]."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """(h, w) float32 band-limited noise, std ~0.6-1: a coarse Gaussian grid upsampled bicubically."""
    gh, gw = max(2, int(np.ceil(h / cell)) + 1), max(2, int(np.ceil(w / cell)) + 1)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) float32 row and column coordinates."""
    yy, xx = np.mgrid[0:h, 0:w]
    return yy.astype(np.float32), xx.astype(np.float32)


def _linear_shading(rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
    """(h, w, 1) multiplicative light gradient in [1 - strength, 1 + strength] at a random angle."""
    yy, xx = _grid(h, w)
    phi = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (xx / max(w - 1, 1) - 0.5) * np.cos(phi) + (yy / max(h - 1, 1) - 0.5) * np.sin(phi)
    return (1.0 + 2.0 * strength * ramp)[..., None]


def _object_texture(
    rng: np.random.Generator, kind: str, h: int, w: int, c1: np.ndarray, c2: np.ndarray
) -> np.ndarray:
    """(h, w, 3) texture of one object: colour c1 (and c2 for two-tone textures), light shading."""
    yy, xx = _grid(h, w)
    theta = rng.uniform(0.0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    if kind == "solid":
        tex = np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    elif kind == "stripes":
        period = rng.uniform(4.0, 10.0)
        on = np.mod(u / period, 1.0) < rng.uniform(0.35, 0.65)
        tex = np.where(on[..., None], c1, c2)
    elif kind == "checker":
        cell = rng.uniform(3.0, 8.0)
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        on = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0
        tex = np.where(on[..., None], c1, c2)
    elif kind == "noise":
        blend = 1.0 / (1.0 + np.exp(-3.0 * _smooth_noise(rng, h, w, rng.uniform(2.0, 5.0))))
        tex = c1 * blend[..., None] + c2 * (1.0 - blend[..., None])
    else:
        raise ValueError(f"unknown texture {kind!r}; expected one of {OBJECT_TEXTURES}")
    return (tex * _linear_shading(rng, h, w, rng.uniform(0.0, 0.15))).astype(np.float32)


def _coco_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) muted two-colour gradient + blotchy low-frequency noise + a few faint lines."""
    yy, xx = _grid(h, w)
    c1 = _hsv(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.85))
    c2 = _hsv(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.85))
    phi = rng.uniform(0.0, 2.0 * np.pi)
    t = (xx / w - 0.5) * np.cos(phi) + (yy / h - 0.5) * np.sin(phi) + 0.5
    t = np.clip(t, 0.0, 1.0)[..., None]
    img = c1 * (1.0 - t) + c2 * t
    img += rng.uniform(8.0, 22.0) * _smooth_noise(rng, h, w, rng.uniform(12.0, 32.0))[..., None]
    img += rng.uniform(3.0, 8.0) * _smooth_noise(rng, h, w, 3.0)[..., None]
    img = np.ascontiguousarray(img, dtype=np.float32)
    for _ in range(int(rng.integers(0, 4))):  # clutter that is not an object
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        shade = tuple(float(c) for c in np.clip(img[p0[1], p0[0]] + rng.uniform(-30.0, 30.0), 0, 255))
        cv2.line(img, p0, p1, shade, int(rng.integers(1, 3)), lineType=cv2.LINE_AA)
    return img


def _finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Sensor noise and quantisation: (h, w, 3) float -> uint8."""
    img = img + rng.normal(0.0, rng.uniform(2.0, 5.0), size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Shapes for the COCO part: unit polygons, rasterised by pycocotools so polygons decode exactly
# --------------------------------------------------------------------------------------------------


def _circle(n: int = 48, aspect: float = 1.0) -> np.ndarray:
    a = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([np.cos(a) * aspect, np.sin(a)], axis=1)


def _unit_shape(rng: np.random.Generator, name: str) -> list[np.ndarray]:
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


def _place_shape(
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


def _shape_mask(shape: list[list[float]], h: int, w: int) -> np.ndarray:
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


def _encode_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _segmentation(visible: np.ndarray, full_polygons: list[list[float]] | None) -> list | dict:
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
        if polygons and all(len(p) >= 6 for p in polygons) and np.array_equal(
            _rasterise(polygons, h, w), visible
        ):
            return polygons
    return _encode_rle(visible)


# --------------------------------------------------------------------------------------------------
# COCO image synthesis
# --------------------------------------------------------------------------------------------------


@dataclass
class _Layer:
    """One annotated object (or crowd) on the canvas; later layers cover earlier ones."""

    category_id: int
    iscrowd: int
    full: np.ndarray  # (h, w) bool: all pixels of the shape inside the image
    polygons: list[list[float]] | None  # the drawn polygon when it alone describes `full`
    visible: np.ndarray  # (h, w) bool: `full` minus everything drawn above it


def _paint(
    rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, min_contrast: float = 60.0
) -> None:
    """Paint a random colour + texture into img where mask is set, contrasting with what is there."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    under = img[y0:y1, x0:x1][mask[y0:y1, x0:x1]].mean(axis=0)
    for _ in range(10):  # keep objects visible against the background
        c1 = _hsv(rng.uniform(), rng.uniform(0.35, 1.0), rng.uniform(0.35, 1.0))
        if np.linalg.norm(c1 - under) >= min_contrast:
            break
    if rng.uniform() < 0.5:
        c2 = _hsv(colorsys.rgb_to_hsv(*(c1 / 255.0))[0] + rng.uniform(0.25, 0.75), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
    else:
        c2 = c1 * rng.uniform(0.3, 0.6)
    kind = OBJECT_TEXTURES[int(rng.integers(len(OBJECT_TEXTURES)))]
    tex = _object_texture(rng, kind, int(y1 - y0), int(x1 - x0), c1, c2)
    m = mask[y0:y1, x0:x1]
    img[y0:y1, x0:x1][m] = tex[m]


def _occlusion_ok(layers: list[_Layer], new: np.ndarray, min_pixels: int = 16) -> bool:
    """Would every earlier layer stay recognisable under `new`?

    Layers keep >= 40% of their pixels (80% for large ones, so most large shapes stay large).
    """
    for layer in layers:
        full = np.count_nonzero(layer.full)
        keep = 0.8 if full >= 96**2 else 0.4
        if np.count_nonzero(layer.visible & ~new) < max(min_pixels, keep * full):
            return False
    return True


def _sample_shape(
    rng: np.random.Generator, name: str, sqrt_area: float, h: int, w: int, central: bool
) -> list[list[float]]:
    margin = 0.25 if central else 0.0  # large shapes stay central, others may leave the image in part
    cx = rng.uniform(margin * w, (1 - margin) * w)
    cy = rng.uniform(margin * h, (1 - margin) * h)
    return _place_shape(_unit_shape(rng, name), sqrt_area, rng.uniform(0, 2 * np.pi), cx, cy)


def _crowd_layer(rng: np.random.Generator, img: np.ndarray) -> _Layer | None:
    """A cluster of 5-9 small same-class shapes, annotated as one iscrowd=1 region."""
    h, w = img.shape[:2]
    cat = DEMO_COCO_CATEGORIES[int(rng.integers(len(DEMO_COCO_CATEGORIES)))]
    cx, cy = rng.uniform(0.25 * w, 0.75 * w), rng.uniform(0.25 * h, 0.75 * h)
    spread = rng.uniform(12.0, 22.0)
    union = np.zeros((h, w), dtype=bool)
    for _ in range(int(rng.integers(5, 10))):
        shape = _place_shape(
            _unit_shape(rng, cat["name"]), rng.uniform(9.0, 18.0), rng.uniform(0, 2 * np.pi),
            cx + rng.normal(0.0, spread), cy + rng.normal(0.0, spread * 0.7),
        )
        mask = _shape_mask(shape, h, w)
        if mask.any():
            _paint(rng, img, mask)
            union |= mask
    if not union.any():
        return None
    return _Layer(cat["id"], 1, union, None, union.copy())


def _coco_image(rng: np.random.Generator, index: int) -> tuple[np.ndarray, list[_Layer]]:
    """One image: (h, w, 3) uint8 RGB and its layers bottom to top (visible masks disjoint)."""
    h, w = _image_size(rng)
    img = _coco_background(rng, h, w)
    layers: list[_Layer] = []
    if index % _EMPTY_EVERY == _EMPTY_AT:
        return _finish(rng, img), layers
    if index % _CROWD_EVERY == _CROWD_AT:
        crowd = _crowd_layer(rng, img)
        if crowd is not None:
            layers.append(crowd)
    # One object of a rotating size bucket guarantees every bucket appears in any set of >= 3 images;
    # at most one large object per image so the others stay visible.
    buckets = [("large", "medium", "small")[index % 3]]
    for _ in range(min(int(rng.poisson(2.5)), 6)):
        b = ("small", "medium", "large")[int(rng.choice(3, p=[0.45, 0.4, 0.15]))]
        buckets.append("medium" if b == "large" and "large" in buckets else b)
    sizes = sorted((rng.uniform(*_SIZE_RANGES[b]) for b in buckets), reverse=True)  # big ones behind
    for sqrt_area in sizes:
        cat = DEMO_COCO_CATEGORIES[int(rng.integers(len(DEMO_COCO_CATEGORIES)))]
        large = sqrt_area >= 96.0
        for _ in range(15):
            shape = _sample_shape(rng, cat["name"], sqrt_area, h, w, central=large)
            full = _shape_mask(shape, h, w)
            inside = np.count_nonzero(full)
            if inside < (0.6 if large else 0.75) * sqrt_area**2 or not _occlusion_ok(layers, full):
                continue
            for layer in layers:
                layer.visible &= ~full
            _paint(rng, img, full)
            polygons = shape if len(shape) == 1 else None  # a ring's hole cannot be a COCO polygon
            layers.append(_Layer(cat["id"], 0, full, polygons, full.copy()))
            break
    return _finish(rng, img), layers


def _write_coco_split(
    out: Path, split: str, num_images: int, seed: int, first_image_id: int, first_ann_id: int
) -> dict:
    """Draw and save one split's images; return its COCO json dict."""
    code = "train" if split == "train2017" else "val"
    img_dir = out / split
    img_dir.mkdir(parents=True)
    images, annotations = [], []
    ann_id = first_ann_id
    for i in range(num_images):
        rng = _image_rng(seed, f"coco_{code}", i)
        img, layers = _coco_image(rng, i)
        image_id = first_image_id + i
        file_name = f"{image_id:012d}.jpg"
        _write_jpeg(img_dir / file_name, img)
        h, w = img.shape[:2]
        images.append(
            {"id": image_id, "file_name": file_name, "height": h, "width": w, "license": 1, "date_captured": _DATE}
        )
        for layer in layers:
            if not layer.visible.any():
                continue
            seg = _encode_rle(layer.visible) if layer.iscrowd else _segmentation(layer.visible, layer.polygons)
            rle = mask_utils.encode(np.asfortranarray(layer.visible.astype(np.uint8)))
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": layer.category_id,
                    "segmentation": seg,
                    "area": float(mask_utils.area(rle)),
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "iscrowd": layer.iscrowd,
                }
            )
            ann_id += 1
    return {
        "info": {
            "description": "target-ssl built-in demo dataset (procedural shapes, COCO layout)",
            "url": "",
            "version": str(GENERATOR_VERSION),
            "year": 2024,
            "contributor": "target-ssl",
            "date_created": _DATE,
        },
        "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in DEMO_COCO_CATEGORIES],
    }


def _generate_coco(out: Path, num_train: int, num_val: int, seed: int) -> None:
    (out / "annotations").mkdir(parents=True)
    # Disjoint image / annotation ids across splits, as in COCO.
    for split, n, first_image_id, first_ann_id, json_name in (
        ("train2017", num_train, 1, 1, "instances_train2017.json"),
        ("val2017", num_val, 1_000_001, 10_000_001, "instances_val2017.json"),
    ):
        data = _write_coco_split(out, split, n, seed, first_image_id, first_ann_id)
        (out / "annotations" / json_name).write_text(json.dumps(data, separators=(",", ":")))


# --------------------------------------------------------------------------------------------------
# ADE20k-like scenes
# --------------------------------------------------------------------------------------------------


def _ade_textures(rng: np.random.Generator, h: int, w: int) -> dict[str, Callable[[], np.ndarray]]:
    """Per-class texture makers for one image: each returns (h, w, 3) float32 over the full canvas.

    Colours are jittered per image inside each class's range; the texture family tells classes apart.
    """
    yy, xx = _grid(h, w)

    def sky() -> np.ndarray:
        top = _hsv(rng.uniform(0.53, 0.64), rng.uniform(0.05, 0.6), rng.uniform(0.7, 1.0))
        bottom = top * 0.5 + 0.5 * 255.0 * rng.uniform(0.8, 1.0)
        t = (yy / h)[..., None]
        cloud = np.clip(_smooth_noise(rng, h, w, rng.uniform(16.0, 32.0)), 0.0, None)[..., None]
        base = top * (1 - t) + bottom * t
        return base + (245.0 - base) * np.clip(cloud * rng.uniform(0.3, 0.8), 0.0, 1.0)

    def building() -> np.ndarray:
        wall = _hsv(rng.uniform(0.0, 0.12), rng.uniform(0.05, 0.45), rng.uniform(0.45, 0.8))
        window = _hsv(rng.uniform(0.5, 0.65), rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.3))
        px, py = rng.uniform(6.0, 11.0), rng.uniform(7.0, 12.0)
        on = (np.mod(xx - rng.uniform(0, px), px) < 0.5 * px) & (np.mod(yy - rng.uniform(0, py), py) < 0.55 * py)
        return np.where(on[..., None], window, wall) * _linear_shading(rng, h, w, 0.1)

    def tree() -> np.ndarray:
        leaf = _hsv(rng.uniform(0.25, 0.38), rng.uniform(0.5, 0.9), rng.uniform(0.25, 0.5))
        return leaf * (1.0 + 0.45 * _smooth_noise(rng, h, w, 3.0))[..., None]

    def grass() -> np.ndarray:
        blade = _hsv(rng.uniform(0.17, 0.3), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.8))
        streaks = cv2.resize(rng.standard_normal((max(2, h // 6), w)).astype(np.float32), (w, h))
        fine = rng.standard_normal((h, w)).astype(np.float32)
        return blade * (1.0 + 0.15 * streaks + 0.1 * fine)[..., None]

    def road() -> np.ndarray:
        asphalt = _hsv(rng.uniform(), rng.uniform(0.0, 0.08), rng.uniform(0.25, 0.45))
        fine = rng.standard_normal((h, w)).astype(np.float32)
        img = asphalt * (1.0 + 0.12 * fine)[..., None]
        # A dashed lane marking across the canvas; only the part inside the road region shows.
        theta = rng.uniform(-0.5, 0.5)
        d = (xx - rng.uniform(0.3, 0.7) * w) * np.cos(theta) + (yy - h) * np.sin(theta)
        along = -(xx - w / 2) * np.sin(theta) + yy * np.cos(theta)
        lane = (np.abs(d) < 1.5) & (np.mod(along, 12.0) < 7.0)
        return np.where(lane[..., None], np.float32(230.0), img)

    def water() -> np.ndarray:
        blue = _hsv(rng.uniform(0.48, 0.62), rng.uniform(0.4, 0.85), rng.uniform(0.35, 0.7))
        period = rng.uniform(3.0, 6.0)
        ripple = np.sin(2 * np.pi * (yy / period + 0.6 * _smooth_noise(rng, h, w, 10.0)))
        return blue * (1.0 + 0.18 * ripple)[..., None]

    return {"sky": sky, "building": building, "tree": tree, "grass": grass, "road": road, "water": water}


def _ade_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (h, w, 3) uint8 RGB and (h, w) uint8 labels (0 = other, 1..K = DEMO_ADE_CLASSES)."""
    h, w = _image_size(rng)
    yy, xx = _grid(h, w)
    img = np.zeros((h, w, 3), np.float32)
    label = np.zeros((h, w), np.uint8)
    tex = _ade_textures(rng, h, w)

    def paint(mask: np.ndarray, cls: int, texture: np.ndarray) -> None:
        label[mask] = cls
        img[mask] = texture[mask]

    # Stuff: sky above a wavy horizon, the ground below split into 1-3 bands of grass / road / water.
    base = rng.uniform(0.3, 0.55) * h
    horizon = base + rng.uniform(0.0, 0.05) * h * np.sin(2 * np.pi * xx[0] / rng.uniform(40, 120) + rng.uniform(0, 6.3))
    sky = yy < horizon[None, :]
    paint(sky, _ADE["sky"], tex["sky"]())
    ground_classes = rng.permutation(["grass", "road", "water"])[: int(rng.integers(1, 4))]
    phi = rng.uniform(0.0, np.pi)
    proj = xx * np.cos(phi) + yy * np.sin(phi) + 4.0 * _smooth_noise(rng, h, w, 24.0)
    cuts = np.sort(rng.uniform(proj[~sky].min(), proj[~sky].max(), size=len(ground_classes) - 1))
    band = np.digitize(proj, cuts)
    for j, name in enumerate(ground_classes):
        paint(~sky & (band == j), _ADE[name], tex[name]())

    # Buildings stand on the horizon, trees are leafy blobs in front of them.
    for _ in range(int(rng.integers(0, 4))):
        bw = rng.uniform(0.12, 0.35) * w
        x0 = rng.uniform(-0.1 * w, w - 0.5 * bw)
        top = base - rng.uniform(0.15, 0.45) * h
        bottom = base + rng.uniform(0.0, 0.06) * h
        paint((xx >= x0) & (xx < x0 + bw) & (yy >= top) & (yy < bottom), _ADE["building"], tex["building"]())
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, w), base + rng.uniform(-0.2, 0.05) * h
        r = rng.uniform(0.06, 0.14) * min(h, w)
        blob = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(3, 7))):
            ox, oy, ro = cx + rng.normal(0, r), cy + rng.normal(0, 0.7 * r), r * rng.uniform(0.6, 1.1)
            blob |= (xx - ox) ** 2 + (yy - oy) ** 2 < ro**2
        paint(blob, _ADE["tree"], tex["tree"]())

    # Unlabelled clutter (label 0): random polygons in random colours with a checker texture.
    for _ in range(int(rng.integers(0, 3))):
        pts = rng.uniform([0, 0.2 * h], [w, h], size=(1, 2)) + rng.normal(0, 0.08 * min(h, w), size=(6, 2))
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        c1 = _hsv(rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
        paint(mask.astype(bool), 0, _object_texture(rng, "checker", h, w, c1, c1 * 0.5))

    # Things on the ground: shaded balls and wooden boxes.
    for _ in range(int(rng.integers(0, 4))):
        r = rng.uniform(4.0, 0.12 * min(h, w))
        cx, cy = rng.uniform(0, w), rng.uniform(base, h)
        d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2
        nz = np.sqrt(np.clip(1.0 - d2, 0.0, 1.0))
        light = np.clip((-0.5 * (xx - cx) / r - 0.5 * (yy - cy) / r + 0.7 * nz) / np.sqrt(0.99), 0.0, 1.0)
        colour = _hsv(rng.uniform(), rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
        paint(d2 < 1.0, _ADE["ball"], colour * (0.3 + 0.7 * light)[..., None])
    for _ in range(int(rng.integers(0, 3))):
        side = rng.uniform(8.0, 0.25 * min(h, w))
        rect = ((float(rng.uniform(0, w)), float(rng.uniform(base, h))), (side, side * rng.uniform(0.6, 1.4)), float(rng.uniform(0, 90)))
        corners = cv2.boxPoints(rect)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 1)
        wood = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.5, 0.85), rng.uniform(0.45, 0.85))
        texture = _object_texture(rng, "stripes", h, w, wood, wood * 0.75)
        edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
        texture[edge] *= 0.5  # dark outline
        paint(mask.astype(bool), _ADE["box"], texture)

    # Half the images leave a thin unlabelled band along region borders, as ADE20k annotators do.
    if rng.uniform() < 0.5:
        kernel = np.ones((3, 3), np.uint8)
        border = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
        label[border & (rng.uniform(size=(h, w)) < 0.7)] = 0
    return _finish(rng, img), label


def _generate_ade(out: Path, num_train: int, num_val: int, seed: int) -> None:
    ds = out / "ADEChallengeData2016"
    (ds / "classes.txt").parent.mkdir(parents=True)
    (ds / "classes.txt").write_text("".join(f"{c}\n" for c in DEMO_ADE_CLASSES))
    for folder, prefix, n, split in (
        ("training", "ADE_train", num_train, "ade_train"),
        ("validation", "ADE_val", num_val, "ade_val"),
    ):
        (ds / "images" / folder).mkdir(parents=True)
        (ds / "annotations" / folder).mkdir(parents=True)
        for i in range(n):
            img, label = _ade_image(_image_rng(seed, split, i))
            stem = f"{prefix}_{i + 1:08d}"
            _write_jpeg(ds / "images" / folder / f"{stem}.jpg", img)
            if not cv2.imwrite(str(ds / "annotations" / folder / f"{stem}.png"), label):
                raise OSError(f"could not write {ds / 'annotations' / folder / f'{stem}.png'}")


# --------------------------------------------------------------------------------------------------
# Cache management: generate once, atomically, keyed by a marker
# --------------------------------------------------------------------------------------------------


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
        raise OSError(f"could not write {path}")


def _marker(**params: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, **params}


def _is_complete(folder: Path, marker: dict) -> bool:
    try:
        return json.loads((folder / MARKER_NAME).read_text()) == marker
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive file lock so concurrent processes (torchrun ranks, test workers) generate once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the atomic rename still keeps readers safe
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ensure(root: Path | None, name: str, marker: dict, generate: Callable[[Path], None]) -> Path:
    """Return <root>/<name>, generating it into a temp folder and renaming it in place if needed."""
    root = demo_root() if root is None else Path(root).expanduser()
    final = root / name
    if _is_complete(final, marker):
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"cannot create the demo data folder {root} ({e}); pass a writable root "
            "(--root DIR) or set TARGET_SSL_CACHE to a writable folder"
        ) from e
    with _lock(root / f".{name}.lock"):
        if _is_complete(final, marker):  # another process finished it while we waited
            return final
        tmp = root / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            generate(tmp)
            (tmp / MARKER_NAME).write_text(json.dumps(marker, sort_keys=True))
            if final.exists():  # stale: old version, other parameters, or incomplete
                old = root / f".{name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _check_counts(num_train: int, num_val: int) -> None:
    if num_train < 1 or num_val < 1:
        raise ValueError(f"demo datasets need at least one image per split, got num_train={num_train}, num_val={num_val}")


def ensure_demo_coco(root: Path | None = None, num_train: int = 96, num_val: int = 24, seed: int = 0) -> Path:
    """Generate (once) the COCO-layout demo set and return its folder ``<root>/demo_coco``.

    The folder holds ``train2017/``, ``val2017/`` (``<image_id:012d>.jpg``) and
    ``annotations/instances_{train,val}2017.json``. root defaults to :func:`demo_root`. It is
    regenerated when its ``DONE`` marker is missing or records another generator version, seed
    or image counts (so use separate roots for differently sized sets used side by side).
    """
    _check_counts(num_train, num_val)
    marker = _marker(seed=seed, num_train=num_train, num_val=num_val)
    return _ensure(root, "demo_coco", marker, lambda out: _generate_coco(out, num_train, num_val, seed))


def ensure_demo_ade(root: Path | None = None, num_train: int = 96, num_val: int = 24, seed: int = 0) -> Path:
    """Generate (once) the ADE20k-layout demo set and return ``<root>/demo_ade/ADEChallengeData2016``.

    That folder holds ``images/{training,validation}/ADE_{train,val}_NNNNNNNN.jpg``, the matching
    ``annotations/.../*.png`` (uint8, 0 = other/ignore, i = ``DEMO_ADE_CLASSES[i - 1]``) and
    ``classes.txt`` (one class name per line). Regeneration rules as :func:`ensure_demo_coco`.
    """
    _check_counts(num_train, num_val)
    marker = _marker(seed=seed, num_train=num_train, num_val=num_val)
    out = _ensure(root, "demo_ade", marker, lambda out: _generate_ade(out, num_train, num_val, seed))
    return out / "ADEChallengeData2016"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the built-in demo datasets (COCO and ADE20k layouts).")
    parser.add_argument("--root", type=Path, default=None, help=f"output folder (default: {demo_root()})")
    parser.add_argument("--num-train", type=int, default=96, help="training images per dataset")
    parser.add_argument("--num-val", type=int, default=24, help="validation images per dataset")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    coco = ensure_demo_coco(args.root, args.num_train, args.num_val, args.seed)
    ade = ensure_demo_ade(args.root, args.num_train, args.num_val, args.seed)
    print(f"demo COCO:  {coco}  (train2017/, val2017/, annotations/instances_{{train,val}}2017.json)")
    print(f"demo ADE20k: {ade}  (images/, annotations/, classes.txt)")


if __name__ == "__main__":
    main()
