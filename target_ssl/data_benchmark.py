"""Data pipelines: images/s of one loader process (one torch thread) beside the reference pipeline.

    python tools/benchmark.py data                      # 640x480 and 1333x800 JPEGs, 224 px crops
    python tools/benchmark.py data --end-to-end         # + a short real pretraining run (loader + step)

The reference is what users of the official MAE / BEiT code run: `torchvision.datasets.folder.
pil_loader` (PIL open + convert RGB), `RandomResizedCrop(224, scale=(0.2, 1), bicubic)` +
`RandomHorizontalFlip` + `ToTensor` + `Normalize`. Ours are the real datasets of the runs
(`pretrain.loop.build_dataset` for SplitMask / BEiT / MAE / DINO: decode, crop, flip, masks or split
ids, uint8 out; DINO's 2 x 224 + 10 x 96 crops; the detection (`multiscale_crop`) and segmentation
(512 crops) training datasets), plus variants of MAE's: `mae_wds` (the same JPEGs read from tar shards, `--data wds`; needs
webdataset to write them), `mae_scale_0.2` (the reference's crop scale 0.2-1 instead of our
0.08-1: the like-for-like comparison), `mae_no_draft` (every JPEG decoded in
full), `mae_float` (normalised to float in the worker, as the official code ships it) and
`before` (the pipeline before issue 17: full PIL decode, torchvision v2 `RandomResizedCrop` on
PIL, float normalisation in the worker). All read the same generated JPEGs
(`target_ssl.bench_images`); rounds alternate the order, and each row gives the mean and the
min-max over rounds and the ratio to the reference measured in the same rounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import transforms as T
from torchvision.datasets.folder import pil_loader
from torchvision.transforms import v2

from engine.benchmarking import print_table, write_json
from engine.images import read_rgb
from pretrain.config import default_config
from pretrain.crops import DraftCropTransform
from pretrain.data import IMAGENET_MEAN, IMAGENET_STD, UnlabeledImages, build_transform, normalize_images
from pretrain.loop import build_dataset

from .bench_images import ensure_bench_images

PRETRAIN = ("splitmask", "beit", "mae", "dino")
ABLATIONS = ("mae_wds", "mae_scale_0.2", "mae_no_draft", "mae_float", "before")
PIPELINES = ("reference", *PRETRAIN, *ABLATIONS, "det", "seg")


# What `benchmark all` (target_ssl.gpu_check) runs of this suite: the MAE / SplitMask loaders against
# the reference on 640x480 JPEGs; with --quick a handful of small ones (CI).
GPU_CHECK_ARGS = ["--pipelines", "reference", "mae", "splitmask", "--sizes", "640x480", "--images", "48", "--rounds", "2"]
QUICK_ARGS = ["--pipelines", "reference", "mae", "--sizes", "160x120", "--images", "4", "--rounds", "1"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    p.add_argument("--sizes", nargs="+", default=["640x480", "1333x800"], help="generated JPEG sizes WxH")
    p.add_argument("--images", type=int, default=48, help="JPEGs per size (each round reads them all)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--crop", type=int, default=224, help="pretraining crop side")
    p.add_argument("--cache", default=None, help="folder for the JPEGs (default $TARGET_SSL_CACHE/bench_images)")
    p.add_argument("--end-to-end", action="store_true", help="also time a short real pretraining run")
    p.add_argument("--e2e-method", default="mae", choices=PRETRAIN)
    p.add_argument("--e2e-arch", default="vit_tiny")
    p.add_argument("--e2e-depth", type=int, default=2, help="encoder blocks of the e2e run (None: the arch's)")
    p.add_argument("--e2e-batch", type=int, default=16)
    p.add_argument("--e2e-steps", type=int, default=30)
    p.add_argument("--e2e-workers", type=int, default=1)


def reference_pipeline(files: list[Path], size: int) -> Callable[[int], Any]:
    """The official code's loader: pil_loader + RRC(0.2-1, bicubic) + flip + ToTensor + Normalize."""
    t = T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip
    return lambda i: t(pil_loader(str(files[i])))


def _before_transform(size: int) -> Callable:
    """The pretraining transform before issue 17 (full decode, PIL crop, float in the worker)."""
    from PIL import Image

    t = v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])  # fmt: skip
    return lambda source, name=None: t(Image.fromarray(read_rgb(source)))


def _pretrain_dataset(name: str, folder: Path, size: int) -> UnlabeledImages:
    method = "mae" if name in ABLATIONS else name
    cfg = default_config(method, "folder")
    root = str(_shards(folder) if name == "mae_wds" else folder / "images")
    kind = "wds" if name == "mae_wds" else "folder"
    # The method's recipe for large data: the few generated JPEGs would otherwise select the
    # small-data recipe (PIL colour jitter, blur), which is not what a user at scale runs.
    augment = "mae" if method == "mae" else "default"
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, name=kind, root=root, img_size=size,
                                                            augment=augment))
    ds = build_dataset(cfg)
    if name == "mae_scale_0.2":
        ds.transform = DraftCropTransform(size, (0.2, 1.0))
    elif name == "mae_no_draft":
        ds.transform = build_transform("default", size, draft=False)
    elif name == "before":
        ds.transform = _before_transform(size)
    return ds


def _shards(folder: Path) -> Path:
    """`folder/shards`: its JPEGs written once into tar shards of 16 (several shards, as at scale)."""
    from pretrain.data import list_images
    from pretrain.make_shards import write_shards

    out = folder / "shards"
    if not any(out.glob("*.tar")):
        write_shards(list_images("folder", folder / "images"), folder / "images", out, per_shard=16)
    return out


def _pretrain_pipeline(name: str, folder: Path, size: int) -> Callable[[int], Any]:
    ds = _pretrain_dataset(name, folder, size)
    if name == "mae_float":  # the worker normalises, a float batch crosses the bus
        return lambda i: normalize_images(ds[i])
    return ds.__getitem__


def _det_pipeline(folder: Path) -> Callable[[int], Any]:
    from transfer.detection.config import DataConfig
    from transfer.detection.datasets import CocoInstances, resolve_split
    from transfer.detection.transforms import build_train_transforms

    cfg = DataConfig(kind="custom", root=str(folder), train_json="instances.json", val_json="instances.json",
                     train_images="images", val_images="images")  # fmt: skip
    ds = CocoInstances(resolve_split(cfg, "train"), train=True, transforms=build_train_transforms(cfg))
    return ds.__getitem__


def _seg_pipeline(folder: Path) -> Callable[[int], Any]:
    from transfer.segmentation.data import SegDataset
    from transfer.segmentation.transforms import TrainTransform

    ds = SegDataset(folder / "ade", "train", num_classes=2, transform=TrainTransform(), check_values=None)
    return ds.__getitem__


def build_pipeline(name: str, folder: Path, size: int) -> Callable[[int], Any]:
    """`index -> sample` of pipeline `name` over the JPEGs of `folder`."""
    if name == "reference":
        return reference_pipeline(sorted((folder / "images").glob("*.jpg")), size)
    if name == "det":
        return _det_pipeline(folder)
    if name == "seg":
        return _seg_pipeline(folder)
    return _pretrain_pipeline(name, folder, size)


def _rate(load: Callable[[int], Any], count: int, round_: int) -> float:
    """Images/s of `load` over indices 0..count-1 (epoch `round_` where the dataset has epochs)."""
    owner = getattr(load, "__self__", None)
    if hasattr(owner, "set_epoch"):
        owner.set_epoch(round_)
    torch.manual_seed(round_)
    start = time.perf_counter()
    for i in range(count):
        load(i)
    return count / (time.perf_counter() - start)


def measure(names: list[str], folder: Path, size: int, count: int, rounds: int) -> dict[str, list[float]]:
    """Images/s per round of each pipeline; round r runs them in an order rotated by r."""
    pipelines = {n: build_pipeline(n, folder, size) for n in names}
    for load in pipelines.values():
        load(0)  # warm-up: imports, caches
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order if r % 2 == 0 else order[::-1]:
            rates[n].append(_rate(pipelines[n], count, r))
    return rates


def rows_for(rates: dict[str, list[float]], image_size: str, crop: int) -> list[dict]:
    """Table rows: mean and min-max img/s, and the ratio to the reference round by round."""
    ref = np.array(rates.get("reference", []))
    rows = []
    for name, values in rates.items():
        v = np.array(values)
        ratio = v / ref if len(ref) == len(v) and name not in ("det", "seg") else None
        rows.append({
            "pipeline": name, "jpeg": image_size, "crop": crop if name not in ("det", "seg") else None,
            "img/s": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
            "vs_ref": None if ratio is None else float(ratio.mean()),
            "vs_ref_min": None if ratio is None else float(ratio.min()),
            "vs_ref_max": None if ratio is None else float(ratio.max()),
        })  # fmt: skip
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(1)  # one loader process, as a DataLoader worker runs
    cache = Path(args.cache) if args.cache else None
    rows: list[dict] = []
    for spec in args.sizes:
        w, h = (int(v) for v in spec.lower().split("x"))
        folder = ensure_bench_images(w, h, args.images, cache)
        rates = measure(list(args.pipelines), folder, args.crop, args.images, args.rounds)
        rows += rows_for(rates, spec, args.crop)
    print_table(rows, title=f"Data pipelines, images/s per process (1 thread, {args.rounds} rounds)")
    extra: dict[str, Any] = {}
    if args.end_to_end:
        from .e2e_benchmark import end_to_end

        folder = ensure_bench_images(*(int(v) for v in args.sizes[0].lower().split("x")), args.images, cache)
        extra["end_to_end"] = end_to_end(args, folder)
    write_json(rows, args.out, suite="data", rounds=args.rounds, images=args.images, **extra)
    return rows
