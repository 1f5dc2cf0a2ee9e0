"""ADE20k-layout semantic segmentation data: file discovery, class names, decoding, datasets.

Layout (ADE20k's `ADEChallengeData2016/` release; any dataset in the same layout works):

    root/images/training/*.jpg        root/annotations/training/*.png     (same stems)
    root/images/validation/*.jpg      root/annotations/validation/*.png
    root/classes.txt                  one class name per line (optional: or objectInfo150.txt,
                                      or the names in the config)

Annotations are single-channel PNGs of class ids. With `reduce_zero_label` (ADE20k) id 0 means
"other" and becomes the ignore label 255, and ids 1..K become 0..K-1.

A training sample's augmentation draws from `np.random.default_rng([seed, epoch, index])`, so it
depends only on what is sampled, not on the worker that loads it: resuming reproduces it exactly.
Images are decoded by `engine.images.read_rgb` (16-bit, gray, palette, CMYK -> RGB uint8; truncated
files raise). Unreadable files are skipped and counted (training substitutes the next readable
sample; `"skipped"` and `"skipped_files"` travel with the batch, the keys every loader's batches
share, so the loop can stop when too many are broken).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from demo_data import DEMO_ROOT, ensure_demo_ade
from engine.config import ConfigError
from engine.images import UnreadableImageError, read_rgb, read_size

from .model import IGNORE_INDEX
from .transforms import EvalTransform, TrainTransform

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SPLITS = {"train": "training", "val": "validation"}
MAX_CONSECUTIVE_SKIPS = 10

EXPECTED_LAYOUT = """expected an ADE20k-style layout:
  {root}/
    images/training/*.jpg          annotations/training/*.png     (same file stems)
    images/validation/*.jpg        annotations/validation/*.png   (uint8 class ids; 0 = ignore for ADE20k)
    classes.txt                    one class name per line (or objectInfo150.txt, or data.classes in the config)
Fix: point data.root (--data-root / --set data.root=...) at the folder that holds images/ and annotations/."""

_log = logging.getLogger("target_ssl")


def single_thread_cv2(_worker_id: int | None = None) -> None:
    """Run OpenCV on one thread. Call it in the main process before a DataLoader forks its workers,
    and pass it as their `worker_init_fn`.

    A forked worker inherits OpenCV's thread-pool bookkeeping but not its threads. If the parent
    had used the pool (demo data generation, in-process transforms) and the worker resizes it, the
    worker deadlocks (OpenCV 5.0; seen in tools/demo.py). Setting 1 in the parent first makes the
    workers' call a no-op; it still matters under a `spawn` start method, and one decode thread
    per worker is right anyway since the workers already run in parallel.
    """
    cv2.setNumThreads(1)


class UnreadableFileError(OSError):
    """An image or annotation file could not be decoded."""


class AnnotationError(ValueError):
    """An annotation has the wrong format, size or class ids."""


class BrokenFilesError(RuntimeError):
    """Too many training files could not be read."""


class LabelScanError(AnnotationError, ConfigError):
    """The start-up scan found labels that would stop the run mid-training (names files and fix)."""


def _layout_error(root: Path, problem: str) -> FileNotFoundError:
    return FileNotFoundError(f"{problem}\n" + EXPECTED_LAYOUT.format(root=root))


def resolve_root(root: str | Path) -> Path:
    """The dataset folder: `root`, or the built-in demo set (generated on first use) for "demo"."""
    return ensure_demo_ade() if isinstance(root, str) and root == DEMO_ROOT else Path(root).expanduser()


def read_class_names(root: str | Path, classes: Sequence[str] | None = None, num_classes: int | None = None) -> list[str]:
    """Class names in label order: `classes` if given, else `root/classes.txt`, else ADE20k's
    `root/objectInfo150.txt` (tab-separated, name in the last column, `;`-separated synonyms), else,
    when `num_classes` is known, placeholder names "class_0".. (with a warning)."""
    if classes:
        return [str(c) for c in classes]
    root = resolve_root(root)
    if not root.is_dir():
        raise _layout_error(root, f"dataset root {root} does not exist")
    txt = root / "classes.txt"
    if txt.is_file():
        names = [line.strip() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise ValueError(f"{txt} is empty; write one class name per line")
        return names
    info = root / "objectInfo150.txt"
    if info.is_file():
        rows = [line.split("\t") for line in info.read_text(encoding="utf-8").splitlines() if line.strip()]
        body = rows[1:] if rows and not rows[0][0].strip().isdigit() else rows  # skip the header
        return [r[-1].strip().split(";")[0] for r in body]
    if num_classes:
        _log.warning("no classes.txt / objectInfo150.txt under %s: naming the %d classes class_0..", root, num_classes)
        return [f"class_{i}" for i in range(num_classes)]
    raise _layout_error(root, f"no class names for {root}: neither classes.txt nor objectInfo150.txt exists "
                              "and neither data.classes nor data.num_classes is set")


def list_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """(image, annotation) paths of `split` ("train" / "val"), sorted by file name.

    Raises:
        FileNotFoundError: missing root / folders, no images, or images without annotations; the
            message shows the expected layout.
    """
    root = resolve_root(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if not root.is_dir():
        raise _layout_error(root, f"dataset root {root} does not exist")
    img_dir, ann_dir = root / "images" / SPLITS[split], root / "annotations" / SPLITS[split]
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise _layout_error(root, f"missing folder {d}")
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise _layout_error(root, f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {img_dir}")
    pairs = [(p, ann_dir / f"{p.stem}.png") for p in images]
    missing = [a for _, a in pairs if not a.is_file()]
    if missing:
        raise _layout_error(
            root, f"{len(missing)} of {len(pairs)} images in {img_dir} have no annotation, e.g. {missing[0]}"
        )
    return pairs


def load_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; a truncated or undecodable file raises `UnreadableFileError`."""
    try:
        return read_rgb(path)
    except UnreadableImageError as e:
        raise UnreadableFileError(str(e)) from e


def label_lut(reduce_zero_label: bool) -> np.ndarray:
    """256-entry uint8 lookup: identity, or ADE20k's 0 -> 255, x -> x - 1 (255 stays ignored)."""
    lut = np.arange(256, dtype=np.int64)
    if reduce_zero_label:
        lut = lut - 1
        lut[0] = IGNORE_INDEX
        lut[255] = IGNORE_INDEX
    return lut.astype(np.uint8)


def load_label(path: Path, num_classes: int, reduce_zero_label: bool = True) -> np.ndarray:
    """(H, W) uint8 class ids in [0, K) or 255, read with PIL (palette PNGs keep their indices)."""
    try:
        with Image.open(path) as im:
            im.load()  # full decode inside the try: a truncated PNG fails here
            raw = np.asarray(im)
    except (OSError, ValueError) as e:
        raise UnreadableFileError(f"cannot decode annotation {path}: {e}") from e
    if raw.ndim != 2 or raw.dtype != np.uint8:
        raise AnnotationError(
            f"annotation {path} is {raw.dtype} with shape {raw.shape}; expected a single-channel 8-bit PNG "
            "of class ids (not a colour rendering)"
        )
    label = label_lut(reduce_zero_label)[raw]
    bad = (label != IGNORE_INDEX) & (label >= num_classes)
    if bad.any():
        raise AnnotationError(
            f"annotation {path} has class id {int(raw[bad].max())} but the dataset has {num_classes} classes "
            f"(reduce_zero_label={reduce_zero_label}); set data.num_classes / data.classes to match the labels"
        )
    return label


LABEL_PROBLEMS = {
    "size": "label size differs from its image",
    "mode": "label is not a single-channel 8-bit PNG (L or P mode)",
    "values": "label has class ids >= num_classes that are not the ignore value",
}
_FIXES = {
    "size": "re-export the label at its image's size (they must match pixel for pixel)",
    "mode": "save class ids as a single-channel 8-bit PNG, not a colour rendering",
    "values": "set data.num_classes / data.classes to match the labels (and check data.reduce_zero_label)",
}


@dataclass
class LabelScan:
    """What :func:`scan_labels` found: pairs scanned, labels whose values were read, and for each
    kind ("size", "mode", "values", "unreadable") the "file: detail" strings."""

    pairs: int = 0
    values_read: int = 0
    problems: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in (*LABEL_PROBLEMS, "unreadable")})

    def raise_if_bad(self, root: Path, examples: int = 5) -> None:
        """Raise :class:`LabelScanError` for size / mode / value problems; unreadable files are
        left to the skip budget (training replaces them), so only logged."""
        if self.problems["unreadable"]:
            _log.warning("%d files under %s cannot be read (skipped when sampled), e.g. %s",
                         len(self.problems["unreadable"]), root, self.problems["unreadable"][0])
        parts = [
            f"{len(found)} x {LABEL_PROBLEMS[kind]}, e.g.\n    " + "\n    ".join(found[:examples])
            + f"\n  fix: {_FIXES[kind]}"
            for kind, found in self.problems.items() if kind in LABEL_PROBLEMS and found
        ]
        if parts:
            raise LabelScanError(
                f"segmentation labels under {root} would stop the run mid-training:\n  " + "\n  ".join(parts)
                + "\nRun tools/check_data.py --data ade20k --data-root ... for the full list."
            )


def _label_values_problem(path: Path, num_classes: int, reduce_zero_label: bool) -> str | None:
    try:
        load_label(path, num_classes, reduce_zero_label)
    except AnnotationError as e:
        return str(e)
    return None


def scan_labels(
    pairs: Sequence[tuple[Path, Path]], num_classes: int, reduce_zero_label: bool = True, read_values: int | None = 64,
) -> LabelScan:
    """Check every (image, label) pair's sizes and label mode from the file headers (no pixel
    decode: a 20k-pair ADE20k split takes seconds), and the class ids of `read_values` labels
    spread evenly over the split (None: all of them, as tools/check_data.py does).
    """
    scan = LabelScan(pairs=len(pairs))
    n_values = len(pairs) if read_values is None else min(read_values, len(pairs))
    value_idx = set(np.linspace(0, len(pairs) - 1, n_values).round().astype(int).tolist()) if n_values else set()
    for i, (img_path, ann_path) in enumerate(pairs):
        try:
            img_size = read_size(img_path)
            with Image.open(ann_path) as im:
                ann_size, ann_mode = im.size, im.mode
        except (UnreadableImageError, OSError, ValueError) as e:
            scan.problems["unreadable"].append(str(e))
            continue
        if ann_mode not in ("L", "P"):
            scan.problems["mode"].append(f"{ann_path}: mode {ann_mode}")
            continue
        if ann_size != img_size:
            scan.problems["size"].append(f"{ann_path}: {ann_size[0]}x{ann_size[1]}, image {img_path.name} "
                                         f"{img_size[0]}x{img_size[1]}")
            continue
        if i in value_idx:
            scan.values_read += 1
            try:
                problem = _label_values_problem(ann_path, num_classes, reduce_zero_label)
            except UnreadableFileError as e:
                scan.problems["unreadable"].append(str(e))
                continue
            if problem:
                scan.problems["values"].append(problem)
    return scan


class SegDataset(Dataset):
    """Image / label pairs of one split with the train or eval pipeline.

    Training items: {"image": (3, c, c) float, "label": (c, c) long, "skipped": int,
    "skipped_files": list[str]}. Evaluation items: {"image": (3, h', w') float resized, "label":
    (H, W) long at the original size, "index": int, "skipped": 0, "skipped_files": []} or, for an
    unreadable pair, {"skipped": 1, "skipped_files": [str], "error": str}.

    Args:
        root: dataset folder (see module doc).
        split: "train" or "val".
        num_classes: K.
        transform: `TrainTransform` (random, uses `seed` / `epoch`) or `EvalTransform`.
        reduce_zero_label: ADE20k's label convention.
        seed: base seed of the augmentation streams.
        max_images: keep only the first N pairs (quick evaluations).
        check_values: the start-up label scan (`scan_labels`) reads every header and the class ids
            of this many labels; None skips the scan. Raises `LabelScanError` before training.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int,
        transform: TrainTransform | EvalTransform,
        reduce_zero_label: bool = True,
        seed: int = 0,
        max_images: int | None = None,
        check_values: int | None = 64,
    ) -> None:
        self.root = resolve_root(root)
        self.split = split
        self.pairs = list_pairs(self.root, split)[:max_images]
        self.num_classes = num_classes
        self.transform = transform
        self.reduce_zero_label = reduce_zero_label
        self.seed = seed
        self.epoch = 0  # set by the loop before each epoch's loader iterator is created
        if check_values is not None:
            scan_labels(self.pairs, num_classes, reduce_zero_label, check_values).raise_if_bad(self.root)

    def __len__(self) -> int:
        return len(self.pairs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decode pair `index` -> image (H, W, 3) uint8 RGB, label (H, W) uint8."""
        img_path, ann_path = self.pairs[index]
        image = load_image(img_path)
        label = load_label(ann_path, self.num_classes, self.reduce_zero_label)
        if image.shape[:2] != label.shape:
            raise AnnotationError(
                f"image {img_path} is {image.shape[1]}x{image.shape[0]} but its annotation {ann_path} is "
                f"{label.shape[1]}x{label.shape[0]}; they must have the same size"
            )
        return image, label

    def __getitem__(self, index: int) -> dict:
        if isinstance(self.transform, EvalTransform):
            try:
                image, label = self.read(index)
            except UnreadableFileError as e:
                _log.warning("skipping unreadable validation pair: %s", e)
                return {"skipped": 1, "skipped_files": [str(e)], "error": str(e)}
            img_t, lbl_t = self.transform(image, label)
            return {"image": img_t, "label": lbl_t, "index": index, "skipped": 0, "skipped_files": []}
        errors = []
        for k in range(MAX_CONSECUTIVE_SKIPS):
            i = (index + k) % len(self)
            try:
                image, label = self.read(i)
            except UnreadableFileError as e:
                _log.warning("skipping unreadable training pair: %s", e)
                errors.append(str(e))
                continue
            rng = np.random.default_rng([self.seed, self.epoch, i])
            img_t, lbl_t = self.transform(image, label, rng)
            return {"image": img_t, "label": lbl_t, "skipped": k, "skipped_files": errors}
        raise BrokenFilesError(
            f"{MAX_CONSECUTIVE_SKIPS} consecutive training pairs could not be read, e.g. {errors[0]}; "
            f"check the files under {self.root}"
        )


def collate_train(samples: list[dict]) -> dict:
    """Stack training samples -> {"image": (B, 3, c, c), "label": (B, c, c), "skipped": int,
    "skipped_files": list[str]}."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.stack([s["label"] for s in samples]),
        "skipped": sum(s["skipped"] for s in samples),
        "skipped_files": [f for s in samples for f in s["skipped_files"]],
    }


def collate_single(samples: list[dict]) -> dict:
    """Evaluation runs one image at a time (sizes differ): unwrap the 1-element batch."""
    return samples[0]
