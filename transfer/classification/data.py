"""ImageFolder classification data: class discovery, a dataset with timm's transforms, collation.

Layout (torchvision's ImageFolder, the usual release layout of iNat / Food-101 / Cars / DomainNet
once sorted into class folders):

    root/train/<class>/*.jpg
    root/val/<class>/*.jpg        the same class folders as train/

Class ids are the sorted folder names (as ImageFolder). A training sample's augmentation draws
from python `random`, numpy's global RNG and torch's RNG (what timm's transforms use) reseeded from
(seed, epoch, index) inside a forked RNG scope, so it depends only on what is sampled and the
global RNG streams (dropout, drop path) are untouched: a resumed run repeats it exactly.

Indices may exceed the number of images: index `i + k * N` is the k-th repeated copy of image i
(`RepeatAugSampler`), read as image i with its own augmentation. Unreadable training images are
replaced by the next readable one and counted in `batch["skipped"]` / `batch["skipped_files"]`;
unreadable validation images are counted and left out of the metrics.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from demo_data import DEMO_ROOT, ensure_demo_cls
from engine.config import ConfigError
from engine.images import UnreadableImageError, read_rgb

__all__ = ["LayoutError", "list_split", "ClsDataset", "collate", "seeded_rng"]

MAX_CONSECUTIVE_SKIPS = 10

EXPECTED_LAYOUT = """expected an ImageFolder layout:
  {root}/train/<class>/*.jpg
  {root}/val/<class>/*.jpg      (the same class folders as train/)
Fix: point data.root (--data-root / --set data.root=...) at the folder that holds train/ and val/."""


class LayoutError(ConfigError):
    """The dataset folder is not in the ImageFolder layout (the message says what is wrong)."""


def _layout_error(root: Path, problem: str) -> LayoutError:
    return LayoutError(f"{problem}\n" + EXPECTED_LAYOUT.format(root=root))


def resolve_root(root: str | Path) -> Path:
    """The dataset folder of `root`; "demo" is the built-in classification set (made once, here)."""
    if str(root) == DEMO_ROOT:
        return ensure_demo_cls()
    return Path(root).expanduser()


def list_split(root: str | Path, split: str) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, class id) pairs of `root/split` sorted as ImageFolder, and the class names.

    `root` "demo" (`demo_data.DEMO_ROOT`) is the built-in set, generated the first time it is read."""
    root = resolve_root(root)
    folder = root / split
    if not folder.is_dir():
        raise _layout_error(root, f"missing folder {folder}")
    try:
        classes, class_to_idx = find_classes(str(folder))
    except FileNotFoundError as e:
        raise _layout_error(root, f"no class folders in {folder} ({e})") from None
    samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise _layout_error(root, f"no images ({', '.join(IMG_EXTENSIONS)}) in the class folders of {folder}")
    return samples, classes


def check_same_classes(root: str | Path, train: list[str], val: list[str]) -> None:
    """Refuse train/ and val/ with different class folders (class ids would not line up)."""
    if train != val:
        only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise _layout_error(
            Path(root),
            f"train/ and val/ under {root} have different class folders (only in train: {only_train[:5]}, "
            f"only in val: {only_val[:5]}); both splits need the same class folders, even if one is empty",
        )


@contextlib.contextmanager
def seeded_rng(*key: int) -> Iterator[None]:
    """Seed python `random`, numpy's legacy global RNG and torch's CPU RNG from `key` inside the
    block (timm's transforms draw from all three: RandAugment picks its ops with numpy), restore
    them after."""
    state, np_state = random.getstate(), np.random.get_state()
    seed = hash(tuple(int(k) for k in key)) % (2**63)
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.default_generator.manual_seed(seed)  # CPU only: torch.manual_seed costs ~2 ms
        try:
            yield
        finally:
            random.setstate(state)
            np.random.set_state(np_state)


def load_rgb(path: str) -> Image.Image:
    """The image as RGB through the project's one decoder (16-bit, palette, CMYK, ... handled;
    truncated files raise `UnreadableImageError`)."""
    return Image.fromarray(read_rgb(path))


class ClsDataset(Dataset):
    """Images of one split with a timm transform; items {"image", "label", "skipped", "skipped_files"}.

    Args:
        samples: (path, class id) pairs (`list_split`).
        transform: PIL image -> (3, S, S) tensor (random for training).
        train: replace unreadable images by the next readable one (else mark them, label -1).
        seed: base seed of the augmentation streams.
    """

    def __init__(self, samples: list[tuple[str, int]], transform: Callable, train: bool, seed: int = 0) -> None:
        self.samples = samples
        self.transform = transform
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[Image.Image, int] | None:
        path, label = self.samples[index % len(self.samples)]
        try:
            return load_rgb(path), label
        except UnreadableImageError:
            return None

    def __getitem__(self, index: int) -> dict:
        failed: list[str] = []
        for attempt in range(MAX_CONSECUTIVE_SKIPS if self.train else 1):
            # The replacement of copy i + kN is copy (i + 1) + kN: repeated copies stay distinct.
            loaded = self._load(index + attempt)
            if loaded is not None:
                with seeded_rng(self.seed, self.epoch, index + attempt):
                    image = self.transform(loaded[0])
                return {"image": image, "label": loaded[1], "skipped": len(failed), "skipped_files": failed}
            failed.append(self.samples[(index + attempt) % len(self.samples)][0])
        if self.train:
            raise OSError(f"{MAX_CONSECUTIVE_SKIPS} consecutive unreadable images, e.g. {failed[:3]}; check the data")
        return {"image": None, "label": -1, "skipped": 1, "skipped_files": failed}


def collate(items: list[dict]) -> dict:
    """{"image": (B, 3, S, S), "label": (B,) long (-1: unreadable), "skipped": int, "skipped_files": list}."""
    shape = next((it["image"].shape for it in items if it["image"] is not None), None)
    if shape is None:
        raise OSError(f"every image of a batch was unreadable: {[f for it in items for f in it['skipped_files']][:3]}")
    images = [it["image"] if it["image"] is not None else torch.zeros(shape) for it in items]
    return {
        "image": torch.stack(images),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "skipped": sum(it["skipped"] for it in items),
        "skipped_files": [f for it in items for f in it["skipped_files"]],
    }
