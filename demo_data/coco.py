"""The COCO-layout demo set: three shape classes, occlusion, crowds, empty images, COCO json."""

from __future__ import annotations

import colorsys
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from demo_data.drawing import (
    GENERATOR_VERSION,
    OBJECT_TEXTURES,
    coco_background,
    finish,
    hsv,
    image_rng,
    image_size,
    object_texture,
    write_jpeg,
)
from demo_data.shapes import encode_rle, place_shape, segmentation, shape_mask, unit_shape

# Every shape the demo sets draw; the class-folder set (`demo_data.classification`) uses all six.
DEMO_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "ring", "star", "ellipse")
# The COCO-layout set's classes, with non-contiguous ids as COCO's. Generator version 1 used all six
# shapes: at the demo's 132 Mask R-CNN steps halving the classes doubles box AP50 (7.9 -> 13.2 from
# random init, seed 0), since the three left are the ones no partial view confuses.
DEMO_COCO_CATEGORIES: tuple[dict, ...] = (
    {"id": 1, "name": "circle", "supercategory": "round"},
    {"id": 3, "name": "square", "supercategory": "polygon"},
    {"id": 7, "name": "triangle", "supercategory": "polygon"},
)
# sqrt(area) ranges of the full shape for COCO's size buckets (small < 32, medium < 96, large >= 96).
_SIZE_RANGES = {"small": (9.0, 30.0), "medium": (36.0, 90.0), "large": (105.0, 135.0)}
# Objects besides the one of the rotating bucket: Poisson(mean) of them (at most 6), each drawn from
# the buckets with these (small, medium, large) probabilities. Generator version 1 drew Poisson(2.5)
# with (0.45, 0.4, 0.15): 40% of the objects were under 32^2 px, 1-2 patches of a ViT/16 at 128-192
# px, and the demo's Mask R-CNN stayed at its floor (3.4 box AP50 over 3 seeds).
EXTRA_OBJECTS_MEAN = 1.5
BUCKET_PROBABILITIES = (0.1, 0.45, 0.45)
_EMPTY_EVERY, _EMPTY_AT = 16, 3  # image index i is empty when i % 16 == 3 (so i = 3 in any set of >= 4)
_CROWD_EVERY, _CROWD_AT = 8, 5  # image index i holds a crowd region when i % 8 == 5
_DATE = "2024-01-01 00:00:00"  # fixed, so the json is byte-identical between runs


@dataclass
class _Layer:
    """One annotated object (or crowd) on the canvas; later layers cover earlier ones."""

    category_id: int
    iscrowd: int
    full: np.ndarray  # (h, w) bool: all pixels of the shape inside the image
    polygons: list[list[float]] | None  # the drawn polygon when it alone describes `full`
    visible: np.ndarray  # (h, w) bool: `full` minus everything drawn above it


def _paint(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, min_contrast: float = 60.0) -> None:
    """Paint a random colour + texture into img where mask is set, contrasting with what is there."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    under = img[y0:y1, x0:x1][mask[y0:y1, x0:x1]].mean(axis=0)
    for _ in range(10):  # keep objects visible against the background
        c1 = hsv(rng.uniform(), rng.uniform(0.35, 1.0), rng.uniform(0.35, 1.0))
        if np.linalg.norm(c1 - under) >= min_contrast:
            break
    if rng.uniform() < 0.5:
        c2 = hsv(
            colorsys.rgb_to_hsv(*(c1 / 255.0))[0] + rng.uniform(0.25, 0.75),
            rng.uniform(0.3, 1.0),
            rng.uniform(0.3, 1.0),
        )
    else:
        c2 = c1 * rng.uniform(0.3, 0.6)
    kind = OBJECT_TEXTURES[int(rng.integers(len(OBJECT_TEXTURES)))]
    tex = object_texture(rng, kind, int(y1 - y0), int(x1 - x0), c1, c2)
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
    return place_shape(unit_shape(rng, name), sqrt_area, rng.uniform(0, 2 * np.pi), cx, cy)


def _crowd_layer(rng: np.random.Generator, img: np.ndarray) -> _Layer | None:
    """A cluster of 5-9 small same-class shapes, annotated as one iscrowd=1 region."""
    h, w = img.shape[:2]
    cat = DEMO_COCO_CATEGORIES[int(rng.integers(len(DEMO_COCO_CATEGORIES)))]
    cx, cy = rng.uniform(0.25 * w, 0.75 * w), rng.uniform(0.25 * h, 0.75 * h)
    spread = rng.uniform(12.0, 22.0)
    union = np.zeros((h, w), dtype=bool)
    for _ in range(int(rng.integers(5, 10))):
        shape = place_shape(
            unit_shape(rng, cat["name"]),
            rng.uniform(9.0, 18.0),
            rng.uniform(0, 2 * np.pi),
            cx + rng.normal(0.0, spread),
            cy + rng.normal(0.0, spread * 0.7),
        )
        mask = shape_mask(shape, h, w)
        if mask.any():
            _paint(rng, img, mask)
            union |= mask
    if not union.any():
        return None
    return _Layer(cat["id"], 1, union, None, union.copy())


def _coco_image(rng: np.random.Generator, index: int) -> tuple[np.ndarray, list[_Layer]]:
    """One image: (h, w, 3) uint8 RGB and its layers bottom to top (visible masks disjoint)."""
    h, w = image_size(rng)
    img = coco_background(rng, h, w)
    layers: list[_Layer] = []
    if index % _EMPTY_EVERY == _EMPTY_AT:
        return finish(rng, img), layers
    if index % _CROWD_EVERY == _CROWD_AT:
        crowd = _crowd_layer(rng, img)
        if crowd is not None:
            layers.append(crowd)
    # One object of a rotating size bucket guarantees every bucket appears in any set of >= 3 images;
    # at most one large object per image so the others stay visible.
    buckets = [("large", "medium", "small")[index % 3]]
    for _ in range(min(int(rng.poisson(EXTRA_OBJECTS_MEAN)), 6)):
        b = ("small", "medium", "large")[int(rng.choice(3, p=list(BUCKET_PROBABILITIES)))]
        buckets.append("medium" if b == "large" and "large" in buckets else b)
    sizes = sorted((rng.uniform(*_SIZE_RANGES[b]) for b in buckets), reverse=True)  # big ones behind
    for sqrt_area in sizes:
        cat = DEMO_COCO_CATEGORIES[int(rng.integers(len(DEMO_COCO_CATEGORIES)))]
        large = sqrt_area >= 96.0
        for _ in range(15):
            shape = _sample_shape(rng, cat["name"], sqrt_area, h, w, central=large)
            full = shape_mask(shape, h, w)
            inside = np.count_nonzero(full)
            if inside < (0.6 if large else 0.75) * sqrt_area**2 or not _occlusion_ok(layers, full):
                continue
            for layer in layers:
                layer.visible &= ~full
            _paint(rng, img, full)
            polygons = shape if len(shape) == 1 else None  # a ring's hole cannot be a COCO polygon
            layers.append(_Layer(cat["id"], 0, full, polygons, full.copy()))
            break
    return finish(rng, img), layers


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
        rng = image_rng(seed, f"coco_{code}", i)
        img, layers = _coco_image(rng, i)
        image_id = first_image_id + i
        file_name = f"{image_id:012d}.jpg"
        write_jpeg(img_dir / file_name, img)
        h, w = img.shape[:2]
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": h,
                "width": w,
                "license": 1,
                "date_captured": _DATE,
            }
        )
        for layer in layers:
            if not layer.visible.any():
                continue
            seg = encode_rle(layer.visible) if layer.iscrowd else segmentation(layer.visible, layer.polygons)
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
        "licenses": [
            {"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}
        ],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in DEMO_COCO_CATEGORIES],
    }


def generate_coco(out: Path, num_train: int, num_val: int, seed: int) -> None:
    (out / "annotations").mkdir(parents=True)
    # Disjoint image / annotation ids across splits, as in COCO.
    for split, n, first_image_id, first_ann_id, json_name in (
        ("train2017", num_train, 1, 1, "instances_train2017.json"),
        ("val2017", num_val, 1_000_001, 10_000_001, "instances_val2017.json"),
    ):
        data = _write_coco_split(out, split, n, seed, first_image_id, first_ann_id)
        (out / "annotations" / json_name).write_text(json.dumps(data, separators=(",", ":")))
