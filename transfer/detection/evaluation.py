"""Box and mask AP: COCO (pycocotools `COCOeval`) and LVIS (`lvis.LVISEval`), or faster-coco-eval
where it is installed and chosen (`eval_backends`; equal numbers, several times faster).

Predictions are evaluated in the original image coordinates: the model resizes evaluation images
itself and its postprocessing scales boxes back and pastes masks at full resolution (see
`model.py`). Masks are thresholded at 0.5 and RLE-encoded; results follow the COCO results format
(`{"image_id", "category_id", "bbox": [x, y, w, h], "score", "segmentation": RLE}`).

Scale: every AP is reported in percent, [0, 100] (as in the papers and detectron2); a metric with
no ground truth in its group (e.g. APs when there are no small objects) is NaN (None in json).

Keys: `{bbox,segm}_{AP,AP50,AP75,APs,APm,APl}`, plus `_{APr,APc,APf}` for LVIS.
Mask AP uses mask areas for the small / medium / large split: the segm results carry no "bbox"
(otherwise pycocotools and lvis take the box area).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from engine.distributed import all_gather_object, is_main_process
from engine.logging import json_safe, progress
from engine.precision import autocast

from .eval_backends import coco_stats, lvis_stats, resolve_backend

__all__ = [
    "COCO_METRICS",
    "LVIS_METRICS",
    "detections_to_results",
    "results_for_iou_type",
    "coco_evaluate",
    "lvis_evaluate",
    "format_metrics_table",
    "DetectionEvaluator",
    "run_inference",
]

_log = logging.getLogger("target_ssl")

COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
LVIS_METRICS = COCO_METRICS + ("APr", "APc", "APf")


def detections_to_results(
    output: dict[str, torch.Tensor],
    image_id: int,
    label_to_cat_id: dict[int, int],
    mask_threshold: float = 0.5,
) -> list[dict]:
    """One image's detections -> COCO results entries.

    Args:
        output: torchvision detector output for one image: "boxes" (K, 4) xyxy, "scores" (K,),
            "labels" (K,) contiguous labels, optionally "masks" (K, 1, H, W) probabilities.
        image_id: the dataset image id.
        label_to_cat_id: contiguous label -> dataset category id.
    """
    boxes = output["boxes"].detach().float().cpu()
    if boxes.numel() == 0:
        return []
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores = output["scores"].detach().float().cpu().tolist()
    cats = [label_to_cat_id[int(lbl)] for lbl in output["labels"].cpu().tolist()]
    rles: list[dict | None] = [None] * len(scores)
    if "masks" in output:
        binary = (output["masks"][:, 0] > mask_threshold).to(torch.uint8).cpu().numpy()  # (K, H, W)
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))  # one call for all K
        for r in rles:
            r["counts"] = r["counts"].decode("ascii")  # json-able
    results = []
    for box, score, cat, rle in zip(xywh, scores, cats, rles):
        entry = {"image_id": int(image_id), "category_id": cat, "bbox": [round(v, 3) for v in box], "score": score}
        if rle is not None:
            entry["segmentation"] = rle
        results.append(entry)
    return results


def results_for_iou_type(iou_type: str, results: list[dict]) -> list[dict]:
    """The entries of `results` an evaluator of `iou_type` reads: boxes only for "bbox"; for "segm"
    the masks without their boxes (so the small / medium / large split uses mask areas)."""
    if iou_type == "bbox":
        return [{k: v for k, v in r.items() if k != "segmentation"} for r in results]
    # Mask AP: drop the box so the evaluators use mask areas (and derive boxes from the masks).
    return [{k: v for k, v in r.items() if k != "bbox"} for r in results if "segmentation" in r]


def _percent(values: Iterable[float]) -> list[float]:
    return [float("nan") if v < 0 else 100.0 * float(v) for v in values]


def coco_evaluate(
    gt: COCO,
    results: list[dict],
    iou_types: Sequence[str] = ("bbox", "segm"),
    img_ids: Sequence[int] | None = None,
    max_dets: int = 100,
    backend: str = "pycocotools",
    use_cats: bool = True,
) -> dict[str, float]:
    """COCO AP / AP50 / AP75 / APs / APm / APl (percent) per IoU type.

    Args:
        gt: ground truth (pycocotools COCO).
        results: COCO results entries (bbox and, for segm, segmentation).
        img_ids: evaluate on these images only (default: every image of `gt`).
        max_dets: detections per image considered (the last of COCOeval's maxDets).
        backend: "pycocotools", "faster_coco_eval" or "auto" (see `eval_backends`).
        use_cats: match detections to ground truth of their own category (False: of any category,
            COCOeval's `useCats=0`).
    """
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        dets = results_for_iou_type(iou_type, results)
        if not dets:
            # No detection at all: precision is undefined, AP is 0 wherever there is ground truth.
            metrics.update({f"{iou_type}_{k}": 0.0 for k in COCO_METRICS})
            continue
        stats = coco_stats(gt, dets, iou_type, img_ids, max_dets, backend, use_cats=use_cats)
        metrics.update({f"{iou_type}_{k}": v for k, v in zip(COCO_METRICS, _percent(stats[:6]))})
    return metrics


def lvis_evaluate(
    gt_path: str | Path,
    results: list[dict],
    iou_types: Sequence[str] = ("bbox", "segm"),
    img_ids: Sequence[int] | None = None,
    max_dets: int = 300,
    gt: Any | None = None,
    backend: str = "pycocotools",
) -> dict[str, float]:
    """LVIS AP / AP50 / AP75 / APs / APm / APl / APr / APc / APf (percent) per IoU type.

    Args:
        gt_path: the LVIS-format annotation json (categories need `frequency`, images
            `neg_category_ids` and `not_exhaustive_category_ids`).
        results: COCO results entries.
        img_ids: evaluate on these images only.
        max_dets: detections per image (300 for LVIS).
        gt: an already loaded `lvis.LVIS` of `gt_path` (saves re-reading a large json).
        backend: "pycocotools" (the `lvis` API), "faster_coco_eval" (its LVIS mode) or "auto".
    """
    metrics: dict[str, float] = {}
    for iou_type in iou_types:
        dets = results_for_iou_type(iou_type, results)
        if not dets:
            metrics.update({f"{iou_type}_{k}": 0.0 for k in LVIS_METRICS})
            continue
        stats = lvis_stats(gt_path, dets, iou_type, img_ids, max_dets, backend, lvis_gt=gt)
        metrics.update({f"{iou_type}_{k}": v for k, v in zip(LVIS_METRICS, _percent(stats[k] for k in LVIS_METRICS))})
    return metrics


def format_metrics_table(metrics: dict[str, float], title: str = "") -> str:
    """Rows bbox / segm, columns AP, AP50, ... (percent, one decimal)."""
    iou_types = [t for t in ("bbox", "segm") if f"{t}_AP" in metrics]
    names = [k for k in LVIS_METRICS if any(f"{t}_{k}" in metrics for t in iou_types)]
    lines = ([title] if title else []) + ["| type | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for t in iou_types:
        cells = []
        for k in names:
            v = metrics.get(f"{t}_{k}", float("nan"))
            cells.append("-" if math.isnan(v) else f"{v:.1f}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


class DetectionEvaluator:
    """Collects detections on every process, gathers them on rank 0 and scores them.

    Args:
        kind: "coco" / "custom" (pycocotools) or "lvis" (lvis API).
        gt: ground truth as a pycocotools COCO (the dataset's `coco`).
        ann_file: the annotation json (LVIS re-reads it with its own API).
        label_to_cat_id: contiguous label -> category id.
        max_dets: detections per image (100 COCO, 300 LVIS).
        iou_types: ("bbox", "segm").
        backend: "auto" | "pycocotools" | "faster_coco_eval" (resolved now: a named backend that
            is not installed is a ConfigError before any inference runs).
        class_agnostic: score with COCOeval's `useCats=0`: a detection matches ground truth of any
            category (COCO layouts only; the labels come from a class-agnostic `CocoInstances`).
    """

    def __init__(
        self,
        kind: str,
        gt: COCO,
        ann_file: str | Path,
        label_to_cat_id: dict[int, int],
        max_dets: int = 100,
        iou_types: Sequence[str] = ("bbox", "segm"),
        backend: str = "pycocotools",
        class_agnostic: bool = False,
    ) -> None:
        if class_agnostic and kind == "lvis":
            raise ValueError("class-agnostic scoring is for COCO layouts; LVIS's federated evaluation needs the classes")
        self.kind = kind
        self.class_agnostic = class_agnostic
        self.backend = resolve_backend(backend)
        self.gt = gt
        self.ann_file = Path(ann_file)
        self.label_to_cat_id = label_to_cat_id
        self.max_dets = max_dets
        self.iou_types = tuple(iou_types)
        self._lvis_gt = None
        self.reset()

    def reset(self) -> None:
        self._results: dict[int, list[dict]] = {}
        self._skipped = 0

    def process(self, outputs: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int]) -> None:
        """Add the detections of a batch (one output dict per image id)."""
        for out, img_id in zip(outputs, image_ids):
            self._results[int(img_id)] = detections_to_results(out, img_id, self.label_to_cat_id)

    def add_skipped(self, n: int) -> None:
        self._skipped += int(n)

    def evaluate(self, output_dir: str | Path | None = None, tag: str = "val", save_results: bool = True) -> dict:
        """Gather, score on rank 0 and (optionally) write `<tag>_results.json` + `<tag>_metrics.json`.

        Returns:
            the metrics dict on rank 0 (also `num_images`, `skipped_images`), {} on other ranks.
        """
        gathered = all_gather_object((self._results, self._skipped))
        if not is_main_process():
            return {}
        per_image: dict[int, list[dict]] = {}
        skipped = 0
        for res, n in gathered:
            per_image.update(res)  # keyed by image id: an image seen twice counts once
            skipped += n
        results = [r for img_id in sorted(per_image) for r in per_image[img_id]]
        img_ids = sorted(per_image)
        if not img_ids:
            raise RuntimeError("evaluation saw no readable image; check the validation image folder")
        if self.kind == "lvis":
            if self._lvis_gt is None and self.backend == "pycocotools":
                from lvis import LVIS

                self._lvis_gt = LVIS(str(self.ann_file))
            metrics = lvis_evaluate(self.ann_file, results, self.iou_types, img_ids, self.max_dets,
                                    gt=self._lvis_gt, backend=self.backend)
        else:
            metrics = coco_evaluate(self.gt, results, self.iou_types, img_ids, self.max_dets, backend=self.backend,
                                    use_cats=not self.class_agnostic)
        metrics["num_images"] = len(img_ids)
        metrics["skipped_images"] = skipped
        if skipped:
            _log.warning("%d validation images could not be read and were left out of the metrics", skipped)
        _log.info("%s", format_metrics_table(metrics, title=f"{tag}: {len(img_ids)} images ({self.kind}, {self.backend}, AP in %)"))
        if output_dir is not None:
            out = Path(output_dir)
            out.mkdir(parents=True, exist_ok=True)
            if save_results:
                (out / f"{tag}_results.json").write_text(json.dumps(results))
            (out / f"{tag}_metrics.json").write_text(json.dumps(json_safe(metrics), indent=2) + "\n")
        return metrics


@torch.no_grad()
def run_inference(
    model: torch.nn.Module,
    loader: Iterable,
    evaluator: DetectionEvaluator,
    device: torch.device,
    precision: str = "fp32",
    desc: str = "eval",
) -> None:
    """Run the detector (eval mode) over `loader` (batches from `datasets.collate`) into `evaluator`."""
    was_training = model.training
    model.eval()
    try:
        total = len(loader) if hasattr(loader, "__len__") else None
        for batch in progress(loader, total=total, desc=desc, leave=False):
            images, targets, skipped = batch["images"], batch["targets"], batch["skipped"]
            evaluator.add_skipped(skipped)
            if not images:
                continue
            images = [img.to(device, non_blocking=True).float().div_(255) for img in images]
            with autocast(precision, device):
                outputs = model(images)
            evaluator.process(outputs, [t["image_id"] for t in targets])
    finally:
        model.train(was_training)
