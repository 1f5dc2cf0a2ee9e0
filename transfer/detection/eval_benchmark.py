"""Evaluation time: COCO / LVIS box + mask AP by pycocotools / `lvis` vs faster-coco-eval, and
sliding-window segmentation inference one window at a time vs batched.

    python tools/benchmark.py eval --images 5000 --per-image 100 --lvis-images 1000

The ground truth and detections are synthetic (`synthetic_eval`: polygons, RLE, crowds; 100 noisy
detections per image from the ground truth), written to json files that every backend reads, so
the backends score the same files. A row per (dataset, IoU type, backend): seconds for results
loading + evaluate + accumulate + summarize (the ground truth already loaded, as during training),
the speed-up over the reference, and the largest absolute difference of any statistic (all 12
COCOeval stats; LVIS: AP..APf and AR) from the reference's; `equal` is that difference <= 1e-4,
the condition for using the fast backend. The seg rows time `slide_inference` of an UperNet on one
image with `batch_windows` = 1 and = `--batch-windows`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch

from engine.benchmarking import benchmark_device, print_table, time_steps, write_json
from engine.precision import autocast, resolve_precision

from .datasets import coco_api, load_coco_json
from .eval_backends import LVIS_STATS, coco_stats, faster_coco_eval_available, load_ground_truth, lvis_stats
from .evaluation import results_for_iou_type
from .synthetic_eval import synthetic_detections, synthetic_ground_truth

TOLERANCE = 1e-4


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=int, default=5000, help="COCO images (val2017 has 5,000)")
    p.add_argument("--per-image", type=int, default=100, help="detections per image (COCO keeps 100)")
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--lvis-images", type=int, default=1000, help="LVIS images (0: skip LVIS)")
    p.add_argument("--lvis-per-image", type=int, default=300)
    p.add_argument("--lvis-classes", type=int, default=1203)
    p.add_argument("--iou-types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    p.add_argument("--workdir", default=None, help="where the json files go (default: a temp folder)")
    p.add_argument("--seg-arch", default="vit_small", help="UperNet encoder for the sliding-window rows ('' skips)")
    p.add_argument("--seg-image", type=int, nargs=2, default=[512, 2048], metavar=("H", "W"))
    p.add_argument("--batch-windows", type=int, default=8)


def _write_set(folder: Path, name: str, gt: dict, dets: list[dict]) -> tuple[Path, Path]:
    gt_file, res_file = folder / f"{name}_gt.json", folder / f"{name}_results.json"
    gt_file.write_text(json.dumps(gt))
    res_file.write_text(json.dumps(dets))
    return gt_file, res_file


def _stats(kind: str, gt_file: Path, dets: list[dict], iou_type: str, max_dets: int, backend: str,
           coco: object, lvis_gt: object) -> list[float]:
    if kind == "lvis":
        found = lvis_stats(gt_file, dets, iou_type, None, max_dets, backend, lvis_gt=lvis_gt)
        return [found[k] for k in LVIS_STATS]
    return coco_stats(coco, dets, iou_type, None, max_dets, backend)


def _compare(kind: str, gt_file: Path, res_file: Path, iou_types: list[str], max_dets: int) -> list[dict]:
    """Time every installed backend on the same files; rows with seconds, speed-up and differences."""
    coco = coco_api(load_coco_json(gt_file))
    results = json.loads(res_file.read_text())
    backends = ["pycocotools"] + (["faster_coco_eval"] if faster_coco_eval_available() else [])
    loaded = {b: load_ground_truth(kind, b, gt_file, coco) for b in backends}  # outside the timing
    rows = []
    for iou_type in iou_types:
        dets = results_for_iou_type(iou_type, results)
        reference: list[float] = []
        ref_s = 0.0
        for backend in backends:
            start = time.perf_counter()
            stats = _stats(kind, gt_file, dets, iou_type, max_dets, backend, coco, loaded[backend])
            seconds = time.perf_counter() - start
            if backend == "pycocotools":
                reference, ref_s = stats, seconds
            diff = max(abs(a - b) for a, b in zip(stats, reference))
            rows.append({"dataset": kind, "images": len(coco.imgs), "dets": len(dets), "iou": iou_type,
                         "backend": backend, "seconds": seconds, "speedup": ref_s / seconds,
                         "max_abs_diff": diff, "equal": diff <= TOLERANCE, "AP": 100 * stats[0]})
    return rows


def _slide_rows(args: argparse.Namespace, device: torch.device, precision: str) -> list[dict]:
    from transfer.segmentation.inference import slide_inference
    from transfer.segmentation.model import build_upernet

    model = build_upernet(args.seg_arch, 150, channels=256, img_size=512).to(device).eval()
    image = torch.randn(1, 3, *args.seg_image, device=device)
    rows = []
    for bw in (1, args.batch_windows):
        def step(bw: int = bw) -> None:
            with torch.no_grad(), autocast(precision, device):
                slide_inference(model, image, 150, crop=512, stride=341, batch_windows=bw)

        t = time_steps(step, device, warmup=1, iters=max(args.iters // 2, 1))
        rows.append({"arch": args.seg_arch, "image": "x".join(map(str, args.seg_image)), "batch_windows": bw,
                     "precision": precision, "s/image": t["step_s"], "speedup": rows[0]["s/image"] / t["step_s"] if rows else 1.0})
    return rows


def _eval_rows(args: argparse.Namespace, folder: Path) -> list[dict]:
    gt = synthetic_ground_truth(args.images, args.classes)
    # COCO's protocol keeps 100 per image (pycocotools' AP is -1 for any other maxDets[-1]).
    rows = _compare("coco", *_write_set(folder, "coco", gt, synthetic_detections(gt, args.per_image)),
                    args.iou_types, 100)
    if args.lvis_images:
        gt = synthetic_ground_truth(args.lvis_images, args.lvis_classes, lvis=True)
        files = _write_set(folder, "lvis", gt, synthetic_detections(gt, args.lvis_per_image))
        rows += _compare("lvis", *files, args.iou_types, args.lvis_per_image)
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() if not args.workdir else contextlib.nullcontext(args.workdir) as folder:
        rows = _eval_rows(args, Path(folder))
    if not faster_coco_eval_available():
        print("faster-coco-eval is not installed (pip install faster-coco-eval): reference rows only")
    print_table(rows, title="COCO / LVIS evaluation (CPU; seconds per IoU type, ground truth loaded)")
    slide: list[dict] = []
    if args.seg_arch:
        device = benchmark_device(args.device)
        slide = _slide_rows(args, device, resolve_precision(args.precision, device))
        print_table(slide, title=f"Sliding-window inference ({device.type}): one window per forward vs batched")
    write_json(rows, args.out, suite="eval", slide=slide)
    return rows + slide
