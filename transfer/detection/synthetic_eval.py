"""Synthetic COCO / LVIS ground truth and noisy detections for timing and cross-checking evaluators.

Ground truth: images of a few common sizes, objects as star-shaped polygons whose radii are
log-uniform (so small, medium and large objects all occur), stored as polygons, compressed RLE or
(for crowds) uncompressed RLE, as in COCO's own files. LVIS adds per-category `frequency` and
per-image `neg_category_ids` / `not_exhaustive_category_ids`.

Detections (COCO results format, box and compressed RLE mask each): for every ground-truth object a
few copies shifted and scaled by random amounts (IoUs from near 1 down to misses), some with the
wrong category, the rest of the `per_image` budget random false positives; scores are higher for
better copies, with noise, so precision-recall curves are neither trivial nor random.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["synthetic_ground_truth", "synthetic_detections"]

_SIZES = ((480, 640), (640, 480), (375, 500), (427, 640))  # (h, w) common in COCO
_VERTICES = 12


def _star_polygons(rng: np.random.Generator, cx: np.ndarray, cy: np.ndarray, rx: np.ndarray,
                   ry: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N,) centres and radii -> (N, 2 * _VERTICES) polygons [x0, y0, x1, y1, ...] clipped to the image."""
    angles = np.linspace(0, 2 * np.pi, _VERTICES, endpoint=False)
    wobble = rng.uniform(0.7, 1.0, size=(len(cx), _VERTICES))
    xs = np.clip(cx[:, None] + rx[:, None] * wobble * np.cos(angles), 0, w)
    ys = np.clip(cy[:, None] + ry[:, None] * wobble * np.sin(angles), 0, h)
    return np.stack([xs, ys], axis=2).reshape(len(cx), -1)


def _rles(polygons: np.ndarray, h: int, w: int) -> list[dict]:
    """(N, 2V) polygons -> N compressed RLEs (one pycocotools call for all)."""
    return mask_utils.frPyObjects(polygons.tolist(), h, w) if len(polygons) else []


def _uncompressed_counts(binary: np.ndarray) -> list[int]:
    """(H, W) 0/1 mask -> COCO's uncompressed RLE counts: run lengths in column-major order, zeros first."""
    flat = binary.ravel(order="F")
    runs = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size])
    return ([0] if flat[0] else []) + runs.tolist()


def _categories(num_classes: int, lvis: bool, rng: np.random.Generator) -> list[dict]:
    # COCO's ids have gaps (1..90 for 80 classes): use gapped ids so id != contiguous label.
    ids = np.sort(rng.choice(np.arange(1, int(num_classes * 1.15) + 2), size=num_classes, replace=False))
    cats = [{"id": int(c), "name": f"class_{c}"} for c in ids]
    if lvis:
        for c, f in zip(cats, rng.choice(["r", "c", "f"], size=num_classes, p=[0.25, 0.35, 0.40])):
            c["frequency"] = str(f)
    return cats


def _image_annotations(rng: np.random.Generator, img_id: int, h: int, w: int, cat_ids: np.ndarray,
                       objects: tuple[int, int], crowd_fraction: float) -> list[dict]:
    n = int(rng.integers(objects[0], objects[1] + 1))
    r = np.exp(rng.uniform(np.log(6), np.log(min(h, w) / 2.2), size=(n, 2)))  # log-uniform radii
    cx, cy = rng.uniform(0, w, n), rng.uniform(0, h, n)
    polys = _star_polygons(rng, cx, cy, r[:, 0], r[:, 1], h, w)
    rles = _rles(polys, h, w)
    areas, boxes = mask_utils.area(rles), mask_utils.toBbox(rles)
    kind = rng.uniform(size=n)  # < crowd: crowd (uncompressed RLE); < 0.2: compressed RLE; else polygon
    anns = []
    for i in range(n):
        if areas[i] < 4:
            continue
        crowd = bool(kind[i] < crowd_fraction)
        if crowd:
            seg: object = {"counts": _uncompressed_counts(mask_utils.decode(rles[i])), "size": [h, w]}
        elif kind[i] < 0.2:
            seg = {"counts": rles[i]["counts"].decode("ascii"), "size": [h, w]}
        else:
            seg = [[round(v, 2) for v in polys[i].tolist()]]
        anns.append({"image_id": img_id, "category_id": int(rng.choice(cat_ids)), "segmentation": seg,
                     "area": float(areas[i]), "bbox": boxes[i].round(2).tolist(), "iscrowd": int(crowd)})
    return anns


def synthetic_ground_truth(num_images: int = 5000, num_classes: int = 80, objects: tuple[int, int] = (2, 12),
                           lvis: bool = False, crowd_fraction: float = 0.03, seed: int = 0) -> dict:
    """A COCO-format (or LVIS-format, `lvis=True`) instances dict with `num_images` images.

    Every image has `objects` = (min, max) annotations (some crowd); with `lvis`, crowds are left
    out (LVIS has none) and each image lists 3 absent categories as negative and one of its own as
    not exhaustively annotated (half the images).
    """
    rng = np.random.default_rng(seed)
    cats = _categories(num_classes, lvis, rng)
    cat_ids = np.array([c["id"] for c in cats])
    images, anns = [], []
    for img_id in range(1, num_images + 1):
        h, w = _SIZES[int(rng.integers(len(_SIZES)))]
        image = {"id": img_id, "height": h, "width": w, "file_name": f"{img_id:012d}.jpg"}
        own = _image_annotations(rng, img_id, h, w, cat_ids, objects, 0.0 if lvis else crowd_fraction)
        if lvis:
            present = sorted({a["category_id"] for a in own})
            absent = np.setdiff1d(cat_ids, present)
            image["neg_category_ids"] = rng.choice(absent, size=min(3, len(absent)), replace=False).tolist()
            image["not_exhaustive_category_ids"] = present[:1] if present and rng.uniform() < 0.5 else []
        images.append(image)
        anns += own
    for i, a in enumerate(anns, start=1):
        a["id"] = i
    return {"images": images, "annotations": anns, "categories": cats}


def _noisy_copies(rng: np.random.Generator, boxes: np.ndarray, copies: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(G, 4) xywh -> centre shifts (G*copies, 2), scales (G*copies, 2) and a quality in [0, 1] per copy."""
    g = len(boxes)
    quality = rng.uniform(0, 1, size=g * copies) ** 0.7
    spread = (1 - quality)[:, None] * 0.6  # quality 1: exact copy; 0: shifted by up to 60% of the size
    wh = np.repeat(boxes[:, 2:], copies, axis=0)
    shift = rng.uniform(-1, 1, size=(g * copies, 2)) * spread * wh
    scale = np.exp(rng.uniform(-1, 1, size=(g * copies, 2)) * spread)
    return shift, scale, quality


def _image_detections(rng: np.random.Generator, img: dict, anns: list[dict], cat_ids: np.ndarray,
                      per_image: int, copies: int) -> list[dict]:
    h, w = img["height"], img["width"]
    anns = [a for a in anns if not a["iscrowd"]][: max(per_image // copies, 0)]
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    shift, scale, quality = _noisy_copies(rng, boxes, copies)
    src = np.repeat(np.arange(len(anns)), copies)
    centre = boxes[src, :2] + boxes[src, 2:] / 2 + shift
    radii = boxes[src, 2:] / 2 * scale
    cats = np.array([anns[i]["category_id"] for i in src], dtype=np.int64)
    wrong = rng.uniform(size=len(src)) < 0.1
    cats[wrong] = rng.choice(cat_ids, size=int(wrong.sum()))
    n_fp = per_image - len(src)  # false positives fill the budget
    fp_r = np.exp(rng.uniform(np.log(4), np.log(min(h, w) / 3), size=(n_fp, 2)))
    centre = np.concatenate([centre, np.stack([rng.uniform(0, w, n_fp), rng.uniform(0, h, n_fp)], 1)])
    radii = np.concatenate([radii, fp_r])
    cats = np.concatenate([cats, rng.choice(cat_ids, size=n_fp)])
    scores = np.clip(np.concatenate([quality * 0.8, rng.uniform(0, 0.5, n_fp)]) + rng.normal(0, 0.1, per_image), 0.001, 1)
    polys = _star_polygons(rng, centre[:, 0], centre[:, 1], radii[:, 0], radii[:, 1], h, w)
    rles = _rles(polys, h, w)
    box_noise = rng.normal(0, 1.0, size=(len(rles), 4))
    det_boxes = np.maximum(mask_utils.toBbox(rles) + box_noise * [1, 1, 0.5, 0.5], [0, 0, 1, 1])
    return [{"image_id": img["id"], "category_id": int(c), "bbox": b.round(2).tolist(), "score": round(float(s), 5),
             "segmentation": {"counts": r["counts"].decode("ascii"), "size": r["size"]}}
            for c, b, s, r in zip(cats, det_boxes, scores, rles)]


def synthetic_detections(gt: dict, per_image: int = 100, copies: int = 3, seed: int = 1) -> list[dict]:
    """`per_image` detections per image of `gt` (a dict from :func:`synthetic_ground_truth`), each with
    "bbox" (xywh) and "segmentation" (compressed RLE, counts as str), COCO results format."""
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[dict]] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    cat_ids = np.array([c["id"] for c in gt["categories"]])
    dets: list[dict] = []
    for img in gt["images"]:
        dets += _image_detections(rng, img, by_image.get(img["id"], []), cat_ids, per_image, copies)
    return dets
