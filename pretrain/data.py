"""Unlabeled images for pretraining: where they come from, how they are augmented, what breaks.

Sources (`--data`):
- `coco`: `<root>/train2017/`; the files listed by `<root>/annotations/instances_train2017.json` when
  that json exists, otherwise every image in the folder;
- `lvis`: LVIS v1 uses the COCO images: `<root>` is a COCO root; `lvis_v1_train.json` (in `<root>` or
  `<root>/annotations`), if present, lists the files (its `coco_url`s name `train2017/...` or
  `val2017/...`), otherwise `train2017/` as for `coco`;
- `ade20k`: `<root>/images/training/` (`<root>` = ADEChallengeData2016 or its parent);
- `folder`: every image anywhere under `<root>` (no class sub-folders needed);
- `wds`: sharded tar files (WebDataset layout, `pretrain.shards`): `<root>` is a folder of `.tar`
  shards or a brace pattern such as `shards/{000000..000099}.tar`;
- `demo`: the built-in demo set (`demo_data.ensure_demo_coco`), generated on first use.

Roots default to `$TARGET_SSL_<DATA>_ROOT` (e.g. `TARGET_SSL_COCO_ROOT`), else
`$TARGET_SSL_DATA_ROOT/<coco|ADEChallengeData2016|images>`.

Determinism: the augmentation and the mask of sample i in epoch e depend only on (seed, e, i): each
`__getitem__` seeds its own numpy generator and a forked torch RNG from them. So a resumed run sees
exactly the same batches as an uninterrupted one, whatever the number of workers.

Images are decoded by `engine.images.decode_rgb` (16-bit, gray, palette, CMYK... -> RGB uint8; JPEGs
at reduced size when the crop allows, `pretrain.crops`). Samples are uint8: `normalize_images` turns
them into ImageNet-normalised floats on the device, in the task's step. Broken
images (unreadable, truncated) are never fatal one by one: the sample is replaced by another image
drawn from the same seeded generator and the failure is counted in the batch (`"skipped"`,
`"skipped_files"`, the keys every loader's batches share); `engine.skips.SkipBudget` stops the run
when their fraction gets too high.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from engine.config import ConfigError
from engine.images import UnreadableImageError

from .crops import DraftCropTransform
from .shards import ShardIndex, ShardMember, expand_shards

__all__ = [
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_EXTENSIONS",
    "AUGMENTATIONS",
    "BrokenImagesError",
    "DatasetLayoutError",
    "UnlabeledImages",
    "build_transform",
    "collate",
    "list_images",
    "normalize_images",
    "resolve_root",
    "select_subset",
]

DATASETS = ("coco", "ade20k", "lvis", "folder", "wds", "demo")
AUGMENTATIONS = ("default", "ade20k", "mae", "small")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_ENV_DEFAULT_SUBDIR = {
    "coco": "coco", "lvis": "coco", "ade20k": "ADEChallengeData2016", "folder": "images", "wds": "shards",
}  # fmt: skip

_LAYOUTS = {
    "coco": (
        "COCO 2017 layout:\n"
        "  <root>/train2017/*.jpg\n"
        "  <root>/annotations/instances_train2017.json   (optional: lists the training images)"
    ),
    "lvis": (
        "LVIS v1 uses the COCO 2017 images; pass the COCO root:\n"
        "  <root>/train2017/*.jpg  (and val2017/*.jpg if the LVIS json lists them)\n"
        "  <root>/lvis_v1_train.json or <root>/annotations/lvis_v1_train.json   (optional)"
    ),
    "ade20k": (
        "ADE20k layout:\n"
        "  <root>/images/training/*.jpg        (<root> = ADEChallengeData2016, or its parent)\n"
        "  <root>/annotations/training/*.png   (not needed for pretraining)"
    ),
    "folder": "any folder tree with images (" + ", ".join(IMG_EXTENSIONS) + ") at any depth",
    "wds": "a folder of .tar shards or a brace pattern, e.g. 'shards/{000000..000099}.tar' "
    "(write them with: python -m pretrain.make_shards IMAGE_FOLDER shards/)",
}


class DatasetLayoutError(FileNotFoundError):
    """The dataset root is missing or does not have the expected layout."""


class BrokenImagesError(RuntimeError):
    """Too many training images could not be decoded."""


def _env_var(name: str) -> str:
    return f"TARGET_SSL_{name.upper()}_ROOT"


def resolve_root(name: str, root: str | os.PathLike | None) -> Path:
    """The dataset root: `root` if given, else `$TARGET_SSL_<NAME>_ROOT`, else `$TARGET_SSL_DATA_ROOT/<sub>`."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if name == "demo":
        from demo_data import ensure_demo_coco

        return ensure_demo_coco() if root is None else ensure_demo_coco(Path(root))
    if root is None:
        root = os.environ.get(_env_var(name))
    if root is None and os.environ.get("TARGET_SSL_DATA_ROOT"):
        root = Path(os.environ["TARGET_SSL_DATA_ROOT"]) / _ENV_DEFAULT_SUBDIR[name]
    if root is None:
        raise DatasetLayoutError(
            f"no root given for --data {name}: pass --data-root DIR, or set {_env_var(name)} "
            f"(or TARGET_SSL_DATA_ROOT). Expected {_LAYOUTS[name]}"
        )
    return Path(root).expanduser()


def _layout_error(name: str, root: Path, problem: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"--data {name} --data-root {root}: {problem}.\nExpected {_LAYOUTS[name]}")


def _scan(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def _listed_files(name: str, root: Path, json_path: Path, entries: list[str]) -> list[Path]:
    """Files named by an annotation json; missing ones are an error naming a few of them."""
    files = [root / e for e in entries]
    missing = [f for f in files if not f.is_file()]
    if len(missing) == len(files):
        raise _layout_error(
            name, root, f"none of the {len(files)} images listed in {json_path} exist (e.g. {missing[0]})"
        )
    if missing:
        examples = ", ".join(str(m) for m in missing[:3])
        raise _layout_error(
            name,
            root,
            f"{len(missing)} of the {len(files)} images listed in {json_path} are missing (e.g. {examples}); "
            "complete the download or remove the json to use the files that are there",
        )
    return files


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetLayoutError(
            f"cannot read {path} ({e}); re-download it or remove it to list the image folder"
        ) from e


def list_images(name: str, root: str | os.PathLike | None = None) -> list[Path] | ShardIndex:
    """The training image files of dataset `name` (see the module docstring), sorted; for `wds` the
    `ShardIndex` of the shards' image members (in shard and tar order).

    Raises:
        DatasetLayoutError: missing root / folders / listed files, or no images, with the expected layout.
    """
    if name == "wds":
        if root is None:
            root = str(resolve_root(name, root))
        return ShardIndex(expand_shards(root))
    root = resolve_root(name, root)
    kind = "coco" if name == "demo" else name
    if not root.is_dir():
        raise _layout_error(kind, root, "the folder does not exist")
    if kind == "folder":
        files = _scan(root, recursive=True)
        if not files:
            raise _layout_error(kind, root, "no image files found")
        return files
    if kind == "ade20k":
        if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        folder = root / "images" / "training"
        if not folder.is_dir():
            raise _layout_error(kind, root, f"{folder} does not exist")
        files = _scan(folder, recursive=True)
        if not files:
            raise _layout_error(kind, root, f"{folder} has no images")
        return files
    # coco / lvis
    if kind == "lvis":
        for json_path in (root / "lvis_v1_train.json", root / "annotations" / "lvis_v1_train.json"):
            if json_path.is_file():
                images = _read_json(json_path).get("images", [])
                entries = ["/".join(im["coco_url"].split("/")[-2:]) for im in images]
                return _listed_files(kind, root, json_path, entries)
    folder = root / "train2017"
    if not folder.is_dir():
        raise _layout_error(kind, root, f"{folder} does not exist")
    json_path = root / "annotations" / "instances_train2017.json"
    if json_path.is_file():
        images = _read_json(json_path).get("images", [])
        if images:
            return _listed_files(
                kind, root, json_path, sorted(f"train2017/{im['file_name']}" for im in images)
            )
    files = _scan(folder, recursive=False)
    if not files:
        raise _layout_error(kind, root, f"{folder} has no images")
    return files


def _read_file_list(path: Path, files: Sequence[Path], root: Path) -> list[Path]:
    """The files of `files` named by the lines of `path` (absolute, relative to `root`, or a unique
    file name, e.g. SimCLR's ImageNet 1% list); blank lines and `#` comments are skipped."""
    try:
        lines = [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    except OSError as e:
        raise ConfigError(
            f"cannot read --data-list {path} ({e}); give a text file with one image per line"
        ) from e
    by_path = {str(f): f for f in files}
    by_path.update({str(f.relative_to(root)): f for f in files if f.is_relative_to(root)})
    name_count = Counter(f.name for f in files)
    by_name = {f.name: f for f in files}
    chosen, unknown, ambiguous = set(), [], []
    for entry in filter(None, lines):
        found = by_path.get(entry) or by_path.get(str(root / entry))
        if found is None and name_count[entry] > 1:
            ambiguous.append(entry)
        elif found is None and entry not in by_name:
            unknown.append(entry)
        else:
            chosen.add(found or by_name[entry])
    if unknown:
        problem = f"{len(unknown)} entries are not images of this source (e.g. {', '.join(unknown[:3])})"
    elif ambiguous:
        problem = f"{len(ambiguous)} file names are not unique (e.g. {', '.join(ambiguous[:3])}); give paths"
    elif not chosen:
        problem = "it lists no images"
    else:
        return sorted(chosen)
    raise ConfigError(
        f"--data-list {path}: {problem}; list images under {root} (absolute, relative to it, or by name)"
    )


def select_subset(
    files: Sequence[Path],
    root: Path,
    file_list: str | os.PathLike | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> list[Path]:
    """A deterministic subset of `files` for sample-efficiency runs (kept in their sorted order).

    Args:
        files: the source's images (`list_images`); root: the source root (for relative entries).
        file_list: only the files this text file lists (see `_read_file_list`).
        fraction: then a random max(1, round(fraction * n)) of them, drawn with `seed`.
    Returns:
        the selected files; the same arguments always give the same files.
    """
    if isinstance(files, ShardIndex) and file_list is not None:
        raise ConfigError("--data-list is not supported with --data wds; write shards of the subset instead")
    selected = files if isinstance(files, ShardIndex) else list(files)
    if file_list is not None:
        selected = _read_file_list(Path(file_list), selected, root)
    if fraction is not None and fraction < 1:
        n = max(1, round(fraction * len(selected)))
        keep = np.sort(np.random.default_rng(seed).permutation(len(selected))[:n])
        selected = selected.take(keep) if isinstance(selected, ShardIndex) else [selected[i] for i in keep]
    return selected


def build_transform(preset: str, img_size: int, draft: bool = True) -> DraftCropTransform:
    """Image source (path or file object) -> uint8 tensor (3, img_size, img_size); normalise it on the
    device with `normalize_images`.

    default: RandomResizedCrop(scale 0.08-1, bicubic) + horizontal flip (BEiT).
    ade20k: the same with the crop's maximum area 25% of the image (the paper's crucial detail).
    mae: the same with crops of 20-100% of the image (MAE's recipe).
    small: default + colour jitter, grayscale, Gaussian blur, solarisation (the small-data recipe;
        it goes with uniform 75% masking, chosen by the masking config).
    draft: decode JPEGs at reduced size when the crop allows it (`pretrain.crops`).
    """
    if preset not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {preset!r}; choose one of {AUGMENTATIONS}")
    scale = {"ade20k": (0.08, 0.25), "mae": (0.2, 1.0)}.get(preset, (0.08, 1.0))
    extra = None
    if preset == "small":  # on the small uint8 crop
        blur_kernel = max(3, int(0.1 * img_size) // 2 * 2 + 1)  # odd, ~10% of the side (SimCLR)
        extra = v2.Compose([
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomApply([v2.GaussianBlur(blur_kernel, sigma=(0.1, 2.0))], p=0.5),
            v2.RandomSolarize(threshold=128, p=0.2),
        ])  # fmt: skip
    return DraftCropTransform(img_size, scale, extra, draft=draft)


IMAGE_KEYS = ("images", "global_crops", "local_crops")


def normalize_images(batch: dict) -> dict:
    """uint8 images of a batch (`IMAGE_KEYS`, any (..., 3, H, W)) -> float32 ImageNet-normalised, in
    place of the uint8 ones, on the device they are on (the loader ships uint8: 4x fewer bytes)."""
    out = dict(batch)
    for key in IMAGE_KEYS:
        x = out.get(key)
        if isinstance(x, torch.Tensor) and x.dtype == torch.uint8:
            mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1) * 255
            std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1) * 255
            out[key] = (x.float() - mean) / std
    return out


def _source(item: Path | ShardMember) -> tuple[Path | BinaryIO, str | None]:
    """(what the decoder reads, its name in errors): a path as is; a shard member opened."""
    if isinstance(item, Path):
        return item, None
    return item.open(), str(item)


class UnlabeledImages(Dataset):
    """Images (and per-image masks) for pretraining.

    Args:
        files: image paths.
        transform: `(source, name) -> (3, H, W)` uint8 tensor, or -> a dict of view tensors (multi-crop);
            the source is the file's path (or an open binary file for sources without one).
        masking: optional callable `rng -> dict[str, Tensor]` (see `pretrain.masking`), called after the
            transform with the sample's generator.
        seed: base seed; sample i of epoch e uses seeds derived from (seed, e, i) only.
        max_retries: replacement images tried when an image is broken before giving up.

    Item: `{"images": (3, H, W), **mask tensors, "skipped": int, "skipped_files": list[str]}` (the
    transform's entries instead of "images" when it returns a dict).
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        transform: Callable,
        masking: Callable[[np.random.Generator], dict[str, torch.Tensor]] | None = None,
        seed: int = 0,
        max_retries: int = 10,
    ) -> None:
        # A folder source's paths, or a shard index (`pretrain.shards.ShardIndex`) of tar members.
        self.files = files if isinstance(files, ShardIndex) else [Path(f) for f in files]
        if not self.files:
            raise ValueError("UnlabeledImages needs at least one file")
        self.transform = transform
        self.masking = masking
        self.seed = int(seed)
        self.max_retries = max_retries
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files)

    def set_epoch(self, epoch: int) -> None:
        """Select epoch `epoch`'s augmentations (call before creating the loader's iterator)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> dict:
        seq = np.random.SeedSequence([self.seed, self.epoch, int(index)])
        rng = np.random.default_rng(seq)
        torch_seed = int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
        broken: list[str] = []
        path = self.files[index]
        # Torch RNG for the torchvision transforms, forked so the caller's global stream (dropout,
        # drop path when num_workers=0) is untouched.
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed also queues a seed per lazy device backend
            # (a stack trace each, ~2 ms a call); the CPU stream is the same.
            torch.default_generator.manual_seed(torch_seed)
            for _ in range(self.max_retries + 1):
                try:
                    views = self.transform(*_source(path))
                    break
                except UnreadableImageError as e:  # count it, use another image
                    broken.append(f"{e.path} ({e.reason})")
                    path = self.files[int(rng.integers(len(self.files)))]
            else:
                raise BrokenImagesError(
                    f"{len(broken)} images in a row could not be read, e.g.:\n  "
                    + "\n  ".join(broken[:5])
                    + "\nCheck the dataset files (re-download or remove the broken ones)."
                )
        # One view under "images"; a multi-view transform (DINO's crops) names its own entries.
        sample = dict(views) if isinstance(views, dict) else {"images": views}
        if self.masking is not None:
            sample.update(self.masking(rng))
        sample["skipped"] = len(broken)
        sample["skipped_files"] = broken
        return sample


def collate(samples: list[dict]) -> dict:
    """Stack tensors; sum the skipped-image counts; concatenate the skipped-file descriptions.

    Returns `{"images": (B, 3, H, W), **mask tensors (B, ...), "skipped": int, "skipped_files": list[str]}`.
    """
    out: dict = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "skipped":
            out[key] = int(sum(values))
        elif key == "skipped_files":
            out[key] = [f for v in values for f in v]
        else:
            out[key] = torch.stack(values)
    return out
