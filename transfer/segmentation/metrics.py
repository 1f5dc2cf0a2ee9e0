"""Semantic segmentation metrics from a confusion matrix: mIoU, mAcc, aAcc (mmseg's definitions).

For a K x K confusion matrix `cm[g, p]` (ground truth g, prediction p) over labelled pixels:
    IoU_k = cm[k, k] / (sum_p cm[k, p] + sum_g cm[g, k] - cm[k, k])   (intersection / union)
    Acc_k = cm[k, k] / sum_p cm[k, p]                                 (per-class recall)
    aAcc  = trace(cm) / sum(cm)
A class with an empty union (absent from both ground truth and prediction) has IoU = NaN and is
left out of the mean, as is a class absent from the ground truth for Acc. All values in percent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from engine.distributed import all_reduce_sum

from .model import IGNORE_INDEX


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Count (ground truth, prediction) pairs over labelled pixels.

    Args:
        pred: predicted class ids, any shape, values in [0, K).
        target: ground truth of the same shape; `ignore_index` pixels are not counted.
        num_classes: K.
    Returns:
        (K, K) int64, rows = ground truth, columns = prediction.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    valid = target != ignore_index
    t = target[valid].long()
    p = pred[valid].long()
    if t.numel() and (int(t.max()) >= num_classes or int(t.min()) < 0):
        raise ValueError(
            f"ground-truth label {int(t.max())} is outside [0, {num_classes}); check data.num_classes "
            "and data.reduce_zero_label"
        )
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).view(num_classes, num_classes)


def metrics_from_confusion(cm: torch.Tensor) -> dict[str, float | list[float]]:
    """mIoU / mAcc / aAcc (percent) and the per-class IoU and Acc lists (NaN where undefined)."""
    cm = cm.double()
    inter = cm.diag()
    gt_area = cm.sum(dim=1)
    pred_area = cm.sum(dim=0)
    union = gt_area + pred_area - inter
    nan = torch.tensor(float("nan"), dtype=cm.dtype, device=cm.device)
    iou = torch.where(union > 0, inter / union.clamp(min=1), nan) * 100
    acc = torch.where(gt_area > 0, inter / gt_area.clamp(min=1), nan) * 100
    total = cm.sum()
    return {
        "mIoU": float(iou.nanmean()) if (union > 0).any() else float("nan"),
        "mAcc": float(acc.nanmean()) if (gt_area > 0).any() else float("nan"),
        "aAcc": float(inter.sum() / total * 100) if total > 0 else float("nan"),
        "IoU": iou.tolist(),
        "Acc": acc.tolist(),
    }


class SegEvaluator:
    """Accumulates a confusion matrix over batches (on the prediction's device) and all processes."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.cm: torch.Tensor | None = None

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: (..., H, W) class ids (target may hold `ignore_index`)."""
        cm = confusion_matrix(pred, target.to(pred.device), self.num_classes, self.ignore_index)
        self.cm = cm if self.cm is None else self.cm + cm

    def compute(self, device: torch.device | None = None) -> dict[str, float | list[float]]:
        """Sum the matrices of all processes (every rank must call this) and derive the metrics."""
        cm = self.cm if self.cm is not None else torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        if device is not None:
            cm = cm.to(device)
        self.cm = all_reduce_sum(cm)
        return metrics_from_confusion(self.cm)


def per_class_table(metrics: dict, class_names: Sequence[str]) -> str:
    """A plain-text table of per-class IoU / Acc (percent) followed by the summary row."""
    width = max([len("class")] + [len(n) for n in class_names])

    def fmt(v: float) -> str:
        return "   nan" if math.isnan(v) else f"{v:6.2f}"

    lines = [f"{'class':<{width}}    IoU    Acc", "-" * (width + 15)]
    lines += [f"{n:<{width}} {fmt(i)} {fmt(a)}" for n, i, a in zip(class_names, metrics["IoU"], metrics["Acc"])]
    lines.append("-" * (width + 15))
    lines.append(f"{'mean':<{width}} {fmt(metrics['mIoU'])} {fmt(metrics['mAcc'])}   aAcc {metrics['aAcc']:.2f}")
    return "\n".join(lines)


def save_per_class(metrics: dict, class_names: Sequence[str], path: str | Path) -> Path:
    """Write the per-class table as JSON ({"classes": [{"name", "IoU", "Acc"}], "mIoU", "mAcc", "aAcc"})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(v: float) -> float | None:
        return None if math.isnan(v) else round(v, 4)

    rows = [{"name": n, "IoU": clean(i), "Acc": clean(a)} for n, i, a in zip(class_names, metrics["IoU"], metrics["Acc"])]
    summary = {k: clean(metrics[k]) for k in ("mIoU", "mAcc", "aAcc")}
    path.write_text(json.dumps({**summary, "classes": rows}, indent=2))
    return path
