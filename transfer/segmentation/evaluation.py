"""Validation: inference on every validation image (sharded over processes), confusion matrix
summed over processes, mIoU / mAcc / aAcc at the original label resolution, per-class table."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from engine.distributed import all_reduce_sum, broadcast_buffers, get_rank, get_world_size, is_main_process
from engine.logging import progress
from engine.precision import autocast

from .config import EvalConfig
from .data import SegDataset, collate_single, single_thread_cv2
from .inference import predict_logits
from .metrics import SegEvaluator, per_class_table, save_per_class

_log = logging.getLogger("target_ssl")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: SegDataset,
    eval_cfg: EvalConfig,
    device: torch.device,
    precision: str = "fp32",
    num_workers: int = 2,
    class_names: Sequence[str] | None = None,
    out_json: str | Path | None = None,
) -> dict:
    """Evaluate `model` (the unwrapped UperNet) on `dataset` (a validation `SegDataset`).

    Every process runs the images `rank, rank + W, ...`; the confusion matrices are summed with
    `all_reduce_sum`, so every process returns the same metrics. Logits are computed on the
    resized image (sliding-window or whole), upsampled bilinearly to the original label size and
    arg-maxed there. Unreadable validation images are skipped and counted.

    Returns:
        {"mIoU", "mAcc", "aAcc", "IoU": [K], "Acc": [K], "num_images", "skipped_images"} (percent).
    """
    was_training = model.training
    broadcast_buffers(model)  # every process scores with rank 0's model (the one its checkpoints hold)
    model.eval()
    num_classes = dataset.num_classes
    indices = list(range(get_rank(), len(dataset), get_world_size()))
    if num_workers:
        single_thread_cv2()  # before the workers fork (see its docstring)
    loader = DataLoader(
        dataset,
        batch_size=1,
        sampler=indices,
        num_workers=num_workers,
        collate_fn=collate_single,
        worker_init_fn=single_thread_cv2,
        pin_memory=device.type == "cuda",
        generator=torch.Generator(),  # never draw the loader's seed from the global RNG (exact resume)
    )
    evaluator = SegEvaluator(num_classes)
    counts = torch.zeros(2, dtype=torch.long)  # images evaluated, images skipped

    def logits_fn(x: torch.Tensor) -> torch.Tensor:
        with autocast(precision, device):
            return model(x)

    for sample in progress(loader, total=len(indices), desc="eval", leave=False):
        if sample["skipped"]:
            counts[1] += 1
            continue
        image = sample["image"].to(device, non_blocking=True)[None]
        label = sample["label"].to(device, non_blocking=True)
        logits = predict_logits(
            logits_fn, image, num_classes, eval_cfg.mode, eval_cfg.crop, eval_cfg.stride,
            out_size=tuple(label.shape), batch_windows=eval_cfg.batch_windows,
        )
        evaluator.update(logits.argmax(dim=1)[0], label)
        counts[0] += 1
    metrics = evaluator.compute(device)
    counts = all_reduce_sum(counts.to(device)).cpu()
    metrics["num_images"] = int(counts[0])
    metrics["skipped_images"] = int(counts[1])
    if counts[1]:
        _log.warning("evaluation skipped %d unreadable validation images", int(counts[1]))
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if is_main_process():
        _log.info("per-class results (%d images):\n%s", metrics["num_images"], per_class_table(metrics, names))
        if out_json is not None:
            save_per_class(metrics, names, out_json)
    model.train(was_training)
    return metrics
