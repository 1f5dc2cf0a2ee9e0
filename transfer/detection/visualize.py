"""Detections (boxes + masks) drawn next to the ground truth, with torchvision's drawing utilities."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import torch
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4"]


def draw_instances(
    image: torch.Tensor,
    boxes: torch.Tensor,
    masks: torch.Tensor,
    labels: Sequence[str],
    colors: Sequence[str],
) -> torch.Tensor:
    """image (3, H, W) uint8, boxes (N, 4) xyxy, masks (N, H, W) bool -> (3, H, W) uint8 drawing."""
    out = image
    if len(boxes):
        out = draw_segmentation_masks(out, masks.bool(), alpha=0.45, colors=list(colors))
        out = draw_bounding_boxes(out, boxes, labels=list(labels), colors=list(colors), width=1)
    return out


def save_detection_figure(
    rows: Sequence[tuple[torch.Tensor, dict, dict]],
    class_names: dict[int, str],
    out_png: str | Path,
    score_threshold: float = 0.5,
) -> Path:
    """One row per image: ground truth | prediction (score >= threshold).

    Each row is (image (3, H, W) uint8, target, prediction) where target / prediction hold
    "boxes" (N, 4) xyxy, "labels" (N,), "masks" (N, H, W) (predictions also "scores").
    """
    fig, axes = plt.subplots(len(rows), 2, figsize=(7, 3.2 * len(rows)), dpi=110, squeeze=False)
    for (image, target, pred), (ax_gt, ax_pred) in zip(rows, axes):
        keep = pred["scores"] >= score_threshold
        for ax, inst, title in ((ax_gt, target, "ground truth"), (ax_pred, _select(pred, keep), "prediction")):
            labels = inst["labels"].tolist()
            names = [class_names.get(c, str(c)) for c in labels]
            if "scores" in inst:
                names = [f"{n} {s:.2f}" for n, s in zip(names, inst["scores"].tolist())]
            colors = [PALETTE[c % len(PALETTE)] for c in labels]
            masks = inst["masks"]
            if masks.dim() == 4:  # Mask R-CNN returns (N, 1, H, W) probabilities
                masks = masks[:, 0] > 0.5
            drawn = draw_instances(image, inst["boxes"], masks, names, colors)
            ax.imshow(drawn.permute(1, 2, 0).numpy())
            ax.set_title(f"{title} ({len(labels)})", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def _select(pred: dict, keep: torch.Tensor) -> dict:
    return {k: v[keep] for k, v in pred.items() if k in ("boxes", "labels", "masks", "scores")}


def save_predictions_figure(
    cfg, checkpoint: str | Path, out_png: str | Path, num_images: int = 3, score_threshold: float = 0.5
) -> Path:
    """Run the trained detector of `cfg` (a `DetConfig`) from `checkpoint` on the first validation
    images that have objects and save ground truth | prediction rows."""
    import dataclasses

    from engine.checkpoint import load_checkpoint

    from .datasets import CocoInstances, resolve_split
    from .model import build_mask_rcnn

    val = CocoInstances(resolve_split(cfg.data, "val"), train=False, class_agnostic=cfg.data.class_agnostic)
    model = build_mask_rcnn(
        dataclasses.replace(cfg.model, weights=None), val.num_classes,
        test_size=cfg.data.test_size, test_max_size=cfg.data.test_max_size,
    )
    model.load_state_dict(load_checkpoint(checkpoint, allow_pickle=cfg.run.allow_pickle)["model"])
    model.eval()
    names = val.class_names
    rows = []
    for img_id in val.ids:
        if len(rows) == num_images:
            break
        info = val.coco.imgs[img_id]
        target = val._target(img_id, info)
        if len(target["labels"]) == 0:
            continue
        image, _ = val._read_image(info)
        if image is None:  # unreadable (already logged): show another image
            continue
        with torch.no_grad():
            (pred,) = model([image.float() / 255])
        rows.append((image, target, pred))
    return save_detection_figure(rows, names, out_png, score_threshold)
