"""COCO-format instance datasets: COCO 2017, LVIS v1 and any custom COCO json.

Each training sample is `(image, target)`: `image` a `tv_tensors.Image` (3, H, W) uint8 and
`target` = {"boxes": BoundingBoxes XYXY (N, 4), "masks": Mask (N, H, W) uint8, "labels": (N,) int64
contiguous labels 1..K (0 is torchvision's background), "image_id": int, "skipped": int,
"skipped_files": list[str]}. Evaluation samples carry the untouched original image and
{"image_id", "skipped", "skipped_files"}; the model resizes and maps its predictions back (see
`model.py`). Images are decoded by `engine.images.read_rgb` (16-bit, gray, palette, CMYK -> RGB
uint8).

Annotation handling:
- polygons, uncompressed RLE and compressed RLE become binary masks through pycocotools;
  annotations without a segmentation get their box as the mask.
- crowd regions (`iscrowd=1`) are dropped from training targets. torchvision's Mask R-CNN has no
  ignore regions, so anchors / proposals on a crowd region count as background (detectron2
  behaves the same way); evaluation still treats crowds as ignore regions (pycocotools).
- annotations that cannot be trained or scored are dropped from the loaded json, counted and
  logged with their ids (`drop_degenerate`): boxes with width or height <= 0, and polygons with
  fewer than 3 points (< 6 coordinates) or an odd number of coordinates (the annotation goes when
  none of its polygons is left; pycocotools would otherwise crash on it when it is sampled).
  Training targets further skip boxes under 1 pixel.
- images without any usable annotation are dropped from training when `filter_empty` (as
  detectron2 does); kept otherwise (torchvision supports empty targets).
- category ids (arbitrary, non-contiguous) map to labels 1..K in sorted id order.

Bad input: a missing root / json raises `DatasetLayoutError` showing the expected layout; a
malformed json raises `AnnotationFormatError` naming the file and the problem; an image that
cannot be decoded (or whose size contradicts the json) is skipped: in training the next image
is used instead and the sample's `skipped` counts the images passed over; in evaluation the sample
comes back with `image=None` and is left out of the metrics.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from demo_data import DEMO_ROOT, ensure_demo_coco
from engine.images import UnreadableImageError, read_rgb

from .config import DataConfig

__all__ = [
    "DatasetLayoutError",
    "AnnotationFormatError",
    "BrokenImagesError",
    "SplitFiles",
    "resolve_split",
    "image_file",
    "load_coco_json",
    "drop_degenerate",
    "check_same_categories",
    "coco_api",
    "CocoInstances",
    "collate",
]

_log = logging.getLogger("target_ssl")


class DatasetLayoutError(FileNotFoundError):
    """The dataset root, an annotation file or an image folder is missing."""


class AnnotationFormatError(ValueError):
    """An annotation json is not valid JSON or not in COCO format."""


class BrokenImagesError(RuntimeError):
    """Too many training images could not be read."""


_LAYOUTS = {
    "coco": """\
  <root>/
    annotations/instances_train2017.json
    annotations/instances_val2017.json
    train2017/000000000009.jpg ...
    val2017/000000000139.jpg ...""",
    "lvis": """\
  <root>/                      (the COCO 2017 root: LVIS v1 uses the COCO images)
    annotations/lvis_v1_train.json
    annotations/lvis_v1_val.json
    train2017/000000000009.jpg ...
    val2017/000000000139.jpg ...""",
    "custom": """\
  any COCO-format json + image folder; set
    data.train_json=<json> data.train_images=<folder> data.val_json=<json> data.val_images=<folder>
  (relative paths are relative to data.root)""",
}

_DEFAULT_FILES = {
    "coco": {"train": ("annotations/instances_train2017.json", "train2017"),
             "val": ("annotations/instances_val2017.json", "val2017")},
    "lvis": {"train": ("annotations/lvis_v1_train.json", "."),
             "val": ("annotations/lvis_v1_val.json", ".")},
}


@dataclass(frozen=True)
class SplitFiles:
    """Annotation file and image folder of one split. `url_layout`: images are found through the
    last two components of each image's `coco_url` (`train2017/x.jpg`) under `image_dir` (LVIS)."""

    ann_file: Path
    image_dir: Path
    kind: str
    url_layout: bool = False


def _layout_error(kind: str, what: str, path: Path) -> DatasetLayoutError:
    return DatasetLayoutError(
        f"{what} {str(path)!r} does not exist. Expected the {kind} layout:\n{_LAYOUTS[kind]}\n"
        "Point the run at your copy with --data-root PATH (or --set data.root=PATH), or set "
        "data.train_json / data.val_json / data.train_images / data.val_images."
    )


def resolve_split(cfg: DataConfig, split: str) -> SplitFiles:
    """Where `split` ("train" or "val") of `cfg` lives; checks that the files exist.

    Raises:
        DatasetLayoutError: the root, json or image folder is missing (message shows the layout).
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    # data.root = "demo": the built-in demo set, generated here (on first use), not when the config loads.
    root = ensure_demo_coco() if cfg.root == DEMO_ROOT else Path(cfg.root).expanduser()
    json_override = cfg.train_json if split == "train" else cfg.val_json
    images_override = cfg.train_images if split == "train" else cfg.val_images
    if cfg.kind == "custom" and (json_override is None or images_override is None):
        raise DatasetLayoutError(
            f"data.kind='custom' needs data.{split}_json and data.{split}_images. Expected:\n{_LAYOUTS['custom']}"
        )
    default_json, default_images = _DEFAULT_FILES.get(cfg.kind, {}).get(split, (None, None))
    ann = Path(json_override or default_json)
    images = Path(images_override or default_images)
    ann = ann if ann.is_absolute() else root / ann
    images = images if images.is_absolute() else root / images
    uses_root = not (Path(json_override or "").is_absolute() and Path(images_override or "").is_absolute())
    if uses_root and not root.is_dir():
        raise _layout_error(cfg.kind, "dataset root", root)
    if not ann.is_file():
        raise _layout_error(cfg.kind, f"{split} annotation file", ann)
    if not images.is_dir():
        raise _layout_error(cfg.kind, f"{split} image folder", images)
    return SplitFiles(ann, images, cfg.kind, url_layout=cfg.kind == "lvis" and images_override is None)


def image_file(files: SplitFiles, info: dict) -> Path:
    """Where the image of json entry `info` lives."""
    if files.url_layout and "coco_url" in info:
        # "http://images.cocodataset.org/train2017/000000391895.jpg" -> train2017/000000391895.jpg
        return files.image_dir.joinpath(*info["coco_url"].split("/")[-2:])
    return files.image_dir / info["file_name"]


def _require(cond: bool, path: Path, problem: str) -> None:
    if not cond:
        raise AnnotationFormatError(f"{path}: {problem}")


def load_coco_json(path: str | Path, drop: bool = True) -> dict:
    """Read and check a COCO-format annotation file (COCO, LVIS or custom).

    Checks the top-level keys, the fields every image / annotation / category needs, that ids are
    unique and that annotations reference known images and categories; with `drop`, removes the
    degenerate annotations (`drop_degenerate`, logged with their ids).

    Raises:
        AnnotationFormatError: with the file name and the first problem found.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationFormatError(
            f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); the file may be truncated"
        ) from e
    except UnicodeDecodeError as e:
        raise AnnotationFormatError(f"{path}: not a UTF-8 text file ({e})") from e
    _require(isinstance(data, dict), path, f"top level must be an object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        _require(key in data, path, f"missing top-level key {key!r} (COCO format has images, annotations, categories)")
        _require(isinstance(data[key], list), path, f"{key!r} must be a list")
    _require(len(data["categories"]) > 0, path, "'categories' is empty")
    for i, cat in enumerate(data["categories"]):
        _require(isinstance(cat, dict) and "id" in cat, path, f"categories[{i}] has no 'id'")
    for i, img in enumerate(data["images"]):
        missing = [k for k in ("id", "height", "width") if not (isinstance(img, dict) and k in img)]
        _require(not missing, path, f"images[{i}] lacks {missing}")
        _require("file_name" in img or "coco_url" in img, path, f"images[{i}] has neither 'file_name' nor 'coco_url'")
    cat_ids = {c["id"] for c in data["categories"]}
    img_ids = {img["id"] for img in data["images"]}
    _require(len(cat_ids) == len(data["categories"]), path, "category ids are not unique")
    _require(len(img_ids) == len(data["images"]), path, "image ids are not unique")
    for i, ann in enumerate(data["annotations"]):
        missing = [k for k in ("image_id", "category_id", "bbox") if not (isinstance(ann, dict) and k in ann)]
        _require(not missing, path, f"annotations[{i}] lacks {missing}")
        _require(ann["category_id"] in cat_ids, path, f"annotations[{i}] has unknown category_id {ann['category_id']}")
        _require(ann["image_id"] in img_ids, path, f"annotations[{i}] refers to unknown image_id {ann['image_id']}")
        bbox = ann["bbox"]
        _require(isinstance(bbox, list) and len(bbox) == 4, path, f"annotations[{i}] bbox must be [x, y, w, h], got {bbox!r}")
    if drop:
        dropped = drop_degenerate(data)
        for kind, ids in dropped.items():
            if ids:
                _log.warning("%s: dropped %d annotation(s) with %s, e.g. ids %s", path.name, len(ids), kind,
                             ", ".join(str(i) for i in ids[:10]))
    return data


DEGENERATE_KINDS = ("a box of width or height <= 0", "no polygon of >= 3 points")


def _valid_polygons(segmentation: Any) -> list | None:
    """The polygons of a polygon segmentation with >= 3 points and an even number of
    coordinates; None for RLE / missing segmentations (nothing to check)."""
    if not isinstance(segmentation, list) or not segmentation:
        return None
    return [p for p in segmentation if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]


def drop_degenerate(data: dict) -> dict[str, list]:
    """Remove, in place, the annotations of a checked COCO dict that cannot be used (module doc);
    drops just the bad polygons of an annotation that keeps a good one.

    Returns:
        {kind: [annotation id (or list index when it has none), ...]} for each of `DEGENERATE_KINDS`.
    """
    dropped: dict[str, list] = {k: [] for k in DEGENERATE_KINDS}
    kept = []
    for i, ann in enumerate(data["annotations"]):
        ann_id = ann.get("id", f"#{i}")
        w, h = ann["bbox"][2], ann["bbox"][3]
        if not (isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0):
            dropped[DEGENERATE_KINDS[0]].append(ann_id)
            continue
        polygons = _valid_polygons(ann.get("segmentation"))
        if polygons is not None:
            if not polygons:
                dropped[DEGENERATE_KINDS[1]].append(ann_id)
                continue
            if len(polygons) != len(ann["segmentation"]):
                ann = {**ann, "segmentation": polygons}
        kept.append(ann)
    data["annotations"] = kept
    return dropped


def check_same_categories(train_ds: CocoInstances, val_ds: CocoInstances) -> None:
    """Both splits must list the same category ids (labels are numbered by sorted id).

    Raises:
        AnnotationFormatError: naming both files and up to 5 ids found in only one of them.
    """
    a, b = set(train_ds.cat_ids), set(val_ds.cat_ids)
    if a == b:
        return
    only = [(train_ds.files.ann_file, sorted(a - b)), (val_ds.files.ann_file, sorted(b - a))]
    detail = "; ".join(f"only in {p.name}: ids {ids[:5]}{' ...' if len(ids) > 5 else ''}" for p, ids in only if ids)
    raise AnnotationFormatError(
        f"{train_ds.files.ann_file} ({len(a)} categories) and {val_ds.files.ann_file} ({len(b)} categories) "
        f"list different categories ({detail}). Both splits need the same category list: use the train "
        "and val files of one release, or copy the train file's 'categories' into the val file."
    )


def coco_api(data: dict) -> COCO:
    """A pycocotools `COCO` index over an already loaded (and checked) dataset dict."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _to_rle(segmentation: Any, bbox: list[float], h: int, w: int) -> dict:
    """Any COCO segmentation (polygons, uncompressed / compressed RLE, or none) -> compressed RLE."""
    if isinstance(segmentation, list) and segmentation:
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    if isinstance(segmentation, dict):
        if isinstance(segmentation.get("counts"), list):
            return mask_utils.frPyObjects(segmentation, h, w)
        return segmentation
    # No segmentation (box-only data): the box is the mask.
    return mask_utils.frPyObjects(np.asarray([bbox], dtype=np.float64), h, w)[0]


class CocoInstances(Dataset):
    """Images and instance annotations of one COCO-format split.

    Args:
        files: from `resolve_split`.
        train: training samples (targets with boxes / masks / labels) or evaluation samples.
        transforms: v2 transform applied to `(image, target)` in training.
        filter_empty: drop training images without a usable (non-crowd, >= 1 px) annotation.
        max_images: keep only the first N images (quick evaluation).
        seed: base seed of the training augmentation.
        class_agnostic: every category becomes label 1, one "object" class (`DataConfig.class_agnostic`).

    A training sample's augmentation is drawn from torch's RNG seeded by (seed, epoch, index) (see
    `set_epoch`), so it depends only on what is sampled, not on the worker that loads it or on
    anything drawn before: results are the same for any `num_workers`, and a resume reproduces
    them exactly. An index >= len(self) means image `index % len(self)` with its own draws (the
    repeat-factor sampler numbers an image's repeats within an epoch that way).
    """

    def __init__(
        self,
        files: SplitFiles,
        train: bool,
        transforms: Callable | None = None,
        filter_empty: bool = True,
        max_images: int | None = None,
        seed: int = 0,
        class_agnostic: bool = False,
    ) -> None:
        self.files = files
        self.train = train
        self.transforms = transforms
        self.seed = int(seed)
        self.epoch = 0
        self.data = load_coco_json(files.ann_file)
        self.coco = coco_api(self.data)
        self.cat_ids: list[int] = sorted(c["id"] for c in self.data["categories"])
        self.class_agnostic = class_agnostic
        if class_agnostic:
            # Results then carry the first category id; the evaluator matches across categories.
            self.cat_id_to_label = dict.fromkeys(self.cat_ids, 1)
            self.label_to_cat_id = {1: self.cat_ids[0]} if self.cat_ids else {}
        else:
            self.cat_id_to_label = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
            self.label_to_cat_id = {i + 1: cid for i, cid in enumerate(self.cat_ids)}
        ids = sorted(self.coco.imgs)
        if train and filter_empty:
            ids = [i for i in ids if any(self._usable(a) for a in self.coco.imgToAnns.get(i, []))]
        if max_images is not None:
            ids = ids[:max_images]
        if not ids:
            raise AnnotationFormatError(
                f"{files.ann_file}: no {'annotated ' if train and filter_empty else ''}images to "
                f"{'train' if train else 'evaluate'} on"
            )
        self.ids = ids

    @property
    def num_classes(self) -> int:
        return 1 if self.class_agnostic else len(self.cat_ids)

    @property
    def class_names(self) -> dict[int, str]:
        """Contiguous label -> category name ("object" for the one class-agnostic label)."""
        if self.class_agnostic:
            return {1: "object"}
        return {label: self.coco.cats[cid]["name"] for label, cid in self.label_to_cat_id.items()}

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch`'s augmentations (call before creating the loader's iterator)."""
        self.epoch = int(epoch)

    def _augment(self, index: int, image: tv_tensors.Image, target: dict) -> tuple[tv_tensors.Image, dict]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
            torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed costs ~2 ms
            return self.transforms(image, target)

    @staticmethod
    def _usable(ann: dict) -> bool:
        return not ann.get("iscrowd", 0) and ann["bbox"][2] >= 1 and ann["bbox"][3] >= 1

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, info: dict) -> Path:
        return image_file(self.files, info)

    def categories_per_image(self) -> list[list[int]]:
        """Contiguous labels present in each image (training annotations only), for repeat factors."""
        return [
            sorted({self.cat_id_to_label[a["category_id"]] for a in self.coco.imgToAnns.get(i, []) if self._usable(a)})
            for i in self.ids
        ]

    def class_image_counts(self) -> list[float]:
        """Images per class 1..K, for the federated loss: LVIS's `image_count` of each category when
        the json has it (ViTDet's source), else counted from this split's usable annotations."""
        cats = {c["id"]: c for c in self.data["categories"]}
        if all("image_count" in c for c in cats.values()):
            return [float(cats[cid]["image_count"]) for cid in self.cat_ids]
        counts = [0.0] * self.num_classes
        for labels in self.categories_per_image():
            for label in labels:
                counts[label - 1] += 1.0
        return counts

    def _read_image(self, info: dict) -> tuple[torch.Tensor | None, str]:
        """(3, H, W) uint8 image and "", or None and "path (reason)" when it cannot be used."""
        path = self.image_path(info)
        try:
            image = torch.from_numpy(read_rgb(path)).permute(2, 0, 1).contiguous()
        except UnreadableImageError as e:
            _log.warning("skipping unreadable image %s (%s)", path, e.reason)
            return None, f"{path} ({e.reason})"
        if tuple(image.shape[-2:]) != (info["height"], info["width"]):
            reason = (f"it is {image.shape[-1]}x{image.shape[-2]} but {self.files.ann_file.name} says "
                      f"{info['width']}x{info['height']}")
            _log.warning("skipping image %s: %s", path, reason)
            return None, f"{path} ({reason})"
        return image, ""

    def _target(self, img_id: int, info: dict) -> dict:
        h, w = info["height"], info["width"]
        anns = [a for a in self.coco.imgToAnns.get(img_id, []) if self._usable(a)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        if anns:
            rles = [_to_rle(a.get("segmentation"), a["bbox"], h, w) for a in anns]
            masks = torch.from_numpy(mask_utils.decode(rles)).permute(2, 0, 1).contiguous()  # (N, H, W)
        else:
            masks = torch.zeros((0, h, w), dtype=torch.uint8)
        return {
            "boxes": F.clamp_bounding_boxes(tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w))),
            "masks": tv_tensors.Mask(masks),
            "labels": torch.tensor([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> tuple[tv_tensors.Image | None, dict]:
        skipped: list[str] = []
        # Training: an unreadable image is replaced by the next one (counted); evaluation: reported.
        for attempt in range(len(self.ids) if self.train else 1):
            img_id = self.ids[(index + attempt) % len(self.ids)]
            info = self.coco.imgs[img_id]
            image, problem = self._read_image(info)
            if image is None:
                skipped.append(problem)
                continue
            if not self.train:
                return tv_tensors.Image(image), {"image_id": img_id, "skipped": 0, "skipped_files": []}
            image, target = tv_tensors.Image(image), self._target(img_id, info)
            if self.transforms is not None:
                image, target = self._augment(index + attempt, image, target)
            target.update(image_id=img_id, skipped=len(skipped), skipped_files=skipped)
            return image, target
        if self.train:
            raise BrokenImagesError(
                f"none of the {len(self.ids)} images listed in {self.files.ann_file} could be read, e.g. "
                f"{skipped[0]}; check data.train_images / --data-root"
            )
        return None, {"image_id": self.ids[index], "skipped": len(skipped), "skipped_files": skipped}


def collate(batch: list[tuple[Any, dict]]) -> dict[str, Any]:
    """Batch of samples -> {"images": list of (3, H, W) uint8 tensors (sizes differ; the model pads),
    "targets": list of dicts of plain tensors, "skipped": int, "skipped_files": list[str]} where
    `skipped` counts the unreadable images met while building the batch (the keys every loader's
    batches share).

    Evaluation samples whose image could not be read (`image is None`) are left out of both lists.
    """
    skipped = sum(int(t.get("skipped", 0)) for _, t in batch)
    skipped_files = [f for _, t in batch for f in t.get("skipped_files", [])]
    kept = [(img, t) for img, t in batch if img is not None]
    images = [img.as_subclass(torch.Tensor) for img, _ in kept]
    targets = [
        {k: (v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v) for k, v in t.items()
         if k not in ("skipped", "skipped_files")}
        for _, t in kept
    ]
    return {"images": images, "targets": targets, "skipped": skipped, "skipped_files": skipped_files}
