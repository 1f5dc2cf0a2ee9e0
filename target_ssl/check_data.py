"""Vet a dataset before paying for GPUs: decode every image, check every annotation, print a report.

    target-ssl-check-data --data coco --data-root /data/coco
    target-ssl-check-data --data lvis --data-root /data/coco --workers 8
    target-ssl-check-data --data ade20k --data-root /data/ADEChallengeData2016
    target-ssl-check-data --data folder --data-root /data/my_images --quick

Checks what the training loaders would meet, all at once instead of hours in:
- every image decodes fully with the loaders' decoder (`engine.images.read_rgb`: truncated files
  fail); `--quick` reads only the headers (sizes), which misses truncation;
- coco / lvis: the json's format, image sizes against the json, degenerate polygons and boxes
  (which training drops), the same categories in train and val;
- ade20k: every label's size against its image, its mode (single-channel 8-bit) and its class ids
  (<= K-1 or the ignore value 255 after `reduce_zero_label`).

Exit status 0 when nothing is wrong, 1 when problems were found, 2 for an unusable root.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from engine.config import ConfigError
from engine.images import UnreadableImageError, read_rgb, read_size
from pretrain.data import DatasetLayoutError, list_images
from transfer.detection.config import DataConfig
from transfer.detection.datasets import (
    AnnotationFormatError,
    drop_degenerate,
    image_file,
    load_coco_json,
    resolve_split,
)
from transfer.segmentation.data import LABEL_PROBLEMS, list_pairs, read_class_names, scan_labels


class Report:
    """Counts and problems by kind, each with a few examples."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.problems: dict[str, list[str]] = {}

    def count(self, what: str, n: int) -> None:
        self.counts[what] = self.counts.get(what, 0) + int(n)

    def add(self, kind: str, items: Iterable[str]) -> None:
        items = list(items)
        if items:
            self.problems.setdefault(kind, []).extend(items)

    def print(self, title: str, examples: int) -> None:
        print(title)
        for what, n in self.counts.items():
            print(f"  {what}: {n}")
        total = sum(len(v) for v in self.problems.values())
        print(f"problems: {total}" if total else "problems: none")
        for kind, items in self.problems.items():
            print(f"  {kind}: {len(items)}")
            for item in items[:examples]:
                print(f"    {item}")
            if len(items) > examples:
                print(f"    ... and {len(items) - examples} more")


def _probe(task: tuple[str, bool]) -> tuple[str, tuple[int, int] | None, str]:
    """(path, (width, height) or None, reason) of one image: a full decode, or only the header."""
    path, quick = task
    if not Path(path).is_file():
        return path, None, "missing"
    try:
        if quick:
            return path, read_size(path), ""
        array = read_rgb(path)
        return path, (array.shape[1], array.shape[0]), ""
    except UnreadableImageError as e:
        return path, None, e.reason


def decode_all(paths: list[Path], quick: bool, workers: int) -> dict[str, tuple[tuple[int, int] | None, str]]:
    """{path: (size or None, reason)} for every image, in `workers` processes."""
    tasks = [(str(p), quick) for p in paths]
    if workers <= 1:
        results = map(_probe, tasks)
        return {p: (size, why) for p, size, why in results}
    with ProcessPoolExecutor(workers) as pool:
        return {p: (size, why) for p, size, why in pool.map(_probe, tasks, chunksize=64)}


def _unreadable(decoded: dict, report: Report) -> None:
    report.add("missing image", (p for p, (size, why) in decoded.items() if size is None and why == "missing"))
    report.add("unreadable image", (f"{p} ({why})" for p, (size, why) in decoded.items()
                                    if size is None and why != "missing"))


def check_coco(kind: str, root: Path, args: argparse.Namespace, report: Report) -> None:
    categories = {}
    for split in ("train", "val"):
        files = resolve_split(DataConfig(kind=kind, root=str(root)), split)
        data = load_coco_json(files.ann_file, drop=False)
        categories[files.ann_file.name] = {c["id"] for c in data["categories"]}
        report.count(f"{split} images ({files.ann_file.name})", len(data["images"]))
        report.count(f"{split} annotations", len(data["annotations"]))
        for what, ids in drop_degenerate(data).items():
            report.add(f"annotation with {what} (dropped in training)",
                       (f"{files.ann_file.name} annotation id {i}" for i in ids))
        paths = {str(image_file(files, info)): info for info in data["images"]}
        decoded = decode_all([Path(p) for p in paths], args.quick, args.workers)
        _unreadable(decoded, report)
        report.add("image size differs from the json (skipped in training)", (
            f"{p}: {size[0]}x{size[1]}, json says {paths[p]['width']}x{paths[p]['height']}"
            for p, (size, _) in decoded.items()
            if size is not None and size != (paths[p]["width"], paths[p]["height"])
        ))
    (name_a, a), (name_b, b) = categories.items()
    if a != b:
        report.add("category lists differ between splits", [
            f"only in {name_a}: {sorted(a - b)[:10]}; only in {name_b}: {sorted(b - a)[:10]}"])


def check_ade20k(root: Path, args: argparse.Namespace, report: Report) -> None:
    if not (root / "images").is_dir() and (root / "ADEChallengeData2016").is_dir():
        root = root / "ADEChallengeData2016"
    names = read_class_names(root, num_classes=args.num_classes)
    report.count("classes", len(names))
    for split in ("train", "val"):
        pairs = list_pairs(root, split)
        report.count(f"{split} pairs", len(pairs))
        scan = scan_labels(pairs, len(names), not args.no_reduce_zero_label, 64 if args.quick else None)
        report.count(f"{split} labels whose class ids were read", scan.values_read)
        for kind, text in LABEL_PROBLEMS.items():
            report.add(text, scan.problems[kind])
        report.add("unreadable label or image header", scan.problems["unreadable"])
        _unreadable(decode_all([img for img, _ in pairs], args.quick, args.workers), report)


def check_folder(root: Path, args: argparse.Namespace, report: Report) -> None:
    files = list_images("folder", root)
    report.count("images", len(files))
    _unreadable(decode_all(files, args.quick, args.workers), report)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=("coco", "lvis", "ade20k", "folder"), required=True)
    p.add_argument("--data-root", required=True, help="the dataset root, as given to the training tools")
    p.add_argument("--quick", action="store_true", help="read image headers only (misses truncated files)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes")
    p.add_argument("--examples", type=int, default=10, help="examples printed per kind of problem")
    p.add_argument("--num-classes", type=int, default=None, help="ade20k: K when there is no classes.txt")
    p.add_argument("--no-reduce-zero-label", action="store_true",
                   help="ade20k-layout data whose label 0 is a class (not 'other')")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = Path(args.data_root).expanduser()
    report = Report()
    try:
        if args.data in ("coco", "lvis"):
            check_coco(args.data, root, args, report)
        elif args.data == "ade20k":
            check_ade20k(root, args, report)
        else:
            check_folder(root, args, report)
    except (ConfigError, DatasetLayoutError, FileNotFoundError, AnnotationFormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report.print(f"check_data --data {args.data} --data-root {root}"
                 f"{' (headers only)' if args.quick else ''}", args.examples)
    return 1 if report.problems else 0



def entry() -> None:
    """The console script (exit status from :func:`main`)."""
    result = main()
    if isinstance(result, int):
        raise SystemExit(result)

if __name__ == "__main__":
    sys.exit(main())
