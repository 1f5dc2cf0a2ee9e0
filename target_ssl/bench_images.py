"""Photo-sized JPEGs for the data benchmark, generated once into a cache folder.

`ensure_bench_images(width, height, count, root)` writes `count` seeded JPEGs (quality 90) of
photo-like content: smooth colour gradients, blobs, sharp-edged objects and sensor-like noise, so
the files have the entropy, and so the decode cost, of real photos (about 150 KB at 640x480 and
500 KB at 1333x800, COCO's range). The same folder also holds a minimal COCO json (one box per image) and
an ADE20k-style layout (labels as PNG), so the detection and segmentation pipelines read the
very same files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["bench_root", "ensure_bench_images", "photo_like"]


def bench_root() -> Path:
    """`$TARGET_SSL_CACHE/bench_images` (default `~/.cache/target_ssl/bench_images`)."""
    return Path(os.environ.get("TARGET_SSL_CACHE", Path.home() / ".cache" / "target_ssl")) / "bench_images"


def photo_like(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """(height, width, 3) uint8: low-frequency colour fields, blobs, rectangles with sharp edges and
    Gaussian noise (sigma 12)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    for c in range(3):
        fx, fy = rng.uniform(1, 6, 2) / max(width, height) * 2 * np.pi
        phase = rng.uniform(0, 2 * np.pi)
        image[..., c] = 128 + 70 * np.sin(fx * x + phase) * np.cos(fy * y)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.25) * width
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r))
        image += blob[..., None] * rng.uniform(-80, 80, 3).astype(np.float32)
    for _ in range(60):  # objects with edges: the high frequencies real photos have
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(4, width // 4), y0 + rng.integers(4, height // 4)
        image[y0:y1, x0:x1] = 0.5 * image[y0:y1, x0:x1] + rng.uniform(0, 128, 3).astype(np.float32)
    image += rng.normal(0, 12, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_annotations(folder: Path, names: list[str], width: int, height: int) -> None:
    """COCO json (one box per image) and ADE-style label PNGs for the same images."""
    images = [{"id": i + 1, "file_name": n, "width": width, "height": height} for i, n in enumerate(names)]
    box = [width * 0.2, height * 0.2, width * 0.5, height * 0.5]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": box, "area": box[2] * box[3],
             "iscrowd": 0} for i in range(len(names))]  # fmt: skip
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    (folder / "instances.json").write_text(json.dumps(coco))
    labels = folder / "ade" / "annotations" / "training"
    labels.mkdir(parents=True, exist_ok=True)
    label = np.ones((height, width), np.uint8)
    label[height // 4 : height // 2, width // 3 :] = 2
    for n in names:
        Image.fromarray(label).save(labels / (Path(n).stem + ".png"))
    link = folder / "ade" / "images" / "training"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(folder / "images", target_is_directory=True)


def ensure_bench_images(width: int, height: int, count: int, root: Path | None = None) -> Path:
    """The folder `<root>/<width>x<height>_<count>` with `images/*.jpg`, `instances.json` and `ade/`
    (images/training -> the same JPEGs, annotations/training/*.png); generated once, seeded."""
    folder = (root or bench_root()) / f"{width}x{height}_{count}"
    if (folder / "done").is_file():
        return folder
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([width, height, count])
    names = [f"{i:06d}.jpg" for i in range(count)]
    for n in names:
        Image.fromarray(photo_like(width, height, rng)).save(folder / "images" / n, quality=90)
    _write_annotations(folder, names, width, height)
    (folder / "done").write_text("ok\n")
    return folder
