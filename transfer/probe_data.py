"""Labelled images for the pretraining-health probe (`transfer.probing`), read once into memory.

Three label sources, the ones a user has anyway:

- ADE20k layout (`SegDataset`'s files): per-pixel class maps -> per-patch labels;
- COCO layout (`CocoInstances`' files): instance masks painted into a per-pixel map (background =
  class 0, objects 1..K in annotation order, later over earlier; crowd regions ignored) -> per-patch;
- class folders (`root/train/<class>/*`, optionally `root/val/<class>/*`): one label per image.

Split rule: the probe is fitted on the `train` split and scored on the `val` split, each capped at
its first `max_train` / `max_val` files in sorted order. A class-folder root without `val/` holds
out every 4th image of each class (index % 4 == 3 in sorted order).

Every image is resized to `img_size` x `img_size` (bilinear, antialiased; labels nearest) and
normalised with the ImageNet statistics, as pretraining and fine-tuning do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from engine.config import ConfigError

from .detection.model import IMAGENET_MEAN, IMAGENET_STD
from .segmentation.data import IMAGE_EXTENSIONS

IGNORE = -1  # ignored patch / pixel in a ProbeSet's labels
HOLDOUT_EVERY = 4  # class folders without val/: every 4th image of a class is held out


class ProbeDataError(ConfigError):
    """The probe's data is missing or cannot be used (the message names the folder and the fix)."""


@dataclass
class ProbeSet:
    """A small labelled set held in memory: images, labels and which part fits the probe.

    images: (N, 3, S, S) float, normalised. kind "dense": pixel_labels (N, S, S) long in [0, K)
    or IGNORE; kind "class": labels (N,) long. is_train: (N,) bool, True = fits the probe, False =
    scores it. `baselines` caches the random-init encoder's results (see `probing.run_probe`).
    """

    kind: Literal["dense", "class"]
    images: torch.Tensor
    labels: torch.Tensor
    is_train: torch.Tensor
    class_names: list[str]
    source: str = ""
    baselines: dict = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __post_init__(self) -> None:
        if not self.is_train.any() or self.is_train.all():
            raise ProbeDataError(f"{self.source}: the probe needs images in both its fit and held-out parts")


def _normalise(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (3, size, size) float normalised."""
    x = F.interpolate(image[None].float() / 255, size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)[0]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def _resize_labels(label: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W) long -> (size, size) long, nearest."""
    return F.interpolate(label[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()


def ade_probe_set(root: str | Path, img_size: int = 128, max_train: int = 256, max_val: int = 128) -> ProbeSet:
    """Per-pixel labels of an ADE20k-layout folder (0 = other -> IGNORE, ids 1..K -> 0..K-1)."""
    from .segmentation.data import list_pairs, load_image, load_label, read_class_names

    names = read_class_names(root)
    images, labels, is_train = [], [], []
    for split, cap in (("train", max_train), ("val", max_val)):
        for img_path, ann_path in list_pairs(root, split)[:cap]:
            image = torch.from_numpy(load_image(img_path)).permute(2, 0, 1)
            label = torch.from_numpy(load_label(ann_path, len(names)).astype(np.int64))
            label[label == 255] = IGNORE
            images.append(_normalise(image, img_size))
            labels.append(_resize_labels(label, img_size))
            is_train.append(split == "train")
    return ProbeSet("dense", torch.stack(images), torch.stack(labels), torch.tensor(is_train), names, str(root))


def _coco_label_map(ds, img_id: int, h: int, w: int) -> torch.Tensor:
    """(h, w) long: 0 background, contiguous label of the topmost instance, IGNORE on crowds."""
    from pycocotools import mask as mask_utils

    from .detection.datasets import _to_rle

    label = torch.zeros(h, w, dtype=torch.long)
    for ann in ds.coco.imgToAnns.get(img_id, []):
        m = torch.from_numpy(mask_utils.decode(_to_rle(ann.get("segmentation"), ann["bbox"], h, w))).bool()
        label[m] = IGNORE if ann.get("iscrowd", 0) else ds.cat_id_to_label[ann["category_id"]]
    return label


def coco_probe_set(root: str | Path, img_size: int = 128, max_train: int = 256, max_val: int = 128) -> ProbeSet:
    """Per-pixel labels painted from the instance masks of a COCO-layout folder."""
    from .detection.config import DataConfig
    from .detection.datasets import CocoInstances, resolve_split

    images, labels, is_train, names = [], [], [], None
    for split, cap in (("train", max_train), ("val", max_val)):
        ds = CocoInstances(resolve_split(DataConfig(kind="coco", root=str(root)), split), train=False, max_images=cap)
        if names is None:
            by_id = {c["id"]: c.get("name", str(c["id"])) for c in ds.data["categories"]}
            names = ["background"] + [by_id[c] for c in ds.cat_ids]
        for img_id in ds.ids:
            info = ds.coco.imgs[img_id]
            image, _ = ds._read_image(info)
            if image is None:  # unreadable: already logged by the dataset
                continue
            images.append(_normalise(image, img_size))
            labels.append(_resize_labels(_coco_label_map(ds, img_id, info["height"], info["width"]), img_size))
            is_train.append(split == "train")
    return ProbeSet("dense", torch.stack(images), torch.stack(labels), torch.tensor(is_train), names, str(root))


def _class_files(folder: Path) -> dict[str, list[Path]]:
    return {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            for d in sorted(folder.iterdir()) if d.is_dir()}


def folder_probe_set(root: str | Path, img_size: int = 128, max_train: int = 256, max_val: int = 128) -> ProbeSet:
    """Image-level labels from `root/train/<class>/*` (and `root/val/<class>/*` when present)."""
    from torchvision.io import ImageReadMode, decode_image

    root = Path(root).expanduser()
    if not (root / "train").is_dir():
        raise ProbeDataError(f"{root / 'train'} does not exist; class folders go in {root}/train/<class>/*.jpg "
                             f"(and optionally {root}/val/<class>/*.jpg)")
    train = _class_files(root / "train")
    names = [c for c, files in train.items() if files]
    if len(names) < 2:
        raise ProbeDataError(f"{root / 'train'} needs at least two class folders with images, found {len(names)}")
    if (root / "val").is_dir():
        val = _class_files(root / "val")
        items = [(p, c, True) for c in names for p in train[c]][:max_train]
        items += [(p, c, False) for c in names for p in val.get(c, [])][:max_val]
    else:
        items = [(p, c, i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1) for c in names for i, p in enumerate(train[c])]
        items = [it for it in items if it[2]][:max_train] + [it for it in items if not it[2]][:max_val]
    index = {c: i for i, c in enumerate(names)}
    images = [_normalise(decode_image(str(p), mode=ImageReadMode.RGB), img_size) for p, _, _ in items]
    return ProbeSet("class", torch.stack(images), torch.tensor([index[c] for _, c, _ in items]),
                    torch.tensor([t for _, _, t in items]), names, str(root))


def build_probe_set(kind: str, root: str | Path | None, img_size: int = 128, max_train: int = 256,
                    max_val: int = 128) -> ProbeSet:
    """A `ProbeSet` of data `kind`: "ade20k", "coco", "folder", "demo_ade" or "demo_coco" (no root)."""
    if kind in ("demo_ade", "demo_coco"):
        from demo_data import ensure_demo_ade, ensure_demo_coco

        kind, root = ("ade20k", ensure_demo_ade()) if kind == "demo_ade" else ("coco", ensure_demo_coco())
    builders = {"ade20k": ade_probe_set, "coco": coco_probe_set, "folder": folder_probe_set}
    if kind not in builders:
        raise ProbeDataError(f"unknown probe data {kind!r}; choose ade20k, coco, folder, demo_ade or demo_coco")
    if root is None:
        raise ProbeDataError(f"--data {kind} needs --data-root (the dataset folder)")
    return builders[kind](root, img_size, max_train, max_val)
