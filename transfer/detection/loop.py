"""Mask R-CNN fine-tuning and evaluation loops (single process, or DDP under torchrun).

`train(cfg)` runs the paper's recipe on the shared engine: AdamW with weight-decay exclusions and
optional layer-wise lr decay, linear warmup + step decay (epochs -> steps), mixed precision
(bf16 on GPU, fp32 on CPU), gradient clipping, NaN guard, atomic checkpoints with exact resume,
periodic COCO / LVIS evaluation with `last` and `best` (by box AP) checkpoints, a progress bar,
`metrics.jsonl` + TensorBoard. `evaluate(cfg)` scores a trained detector (`--eval-only`).

Run directory: `config.json`/`config.py`, `log.txt`, `metrics.jsonl`, `tb/`, `checkpoint_*.pth`,
`last.pth`, `best.pth`, `eval/<tag>_metrics.json`, `eval/final_results.json` (COCO results
format), and `final_metrics.json` (the result: final metrics, AP in percent, and the run facts).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

from engine.checkpoint import load_checkpoint
from engine.config import ConfigError
from engine.distributed import DistInfo, all_gather_object, barrier
from engine.optim import build_adamw
from engine.sampler import ResumableSampler
from engine.schedules import schedule_from_config
from engine.trainer import RunContext, Task, TrainSetup, fit, open_run

from .config import DetConfig
from .datasets import CocoInstances, check_same_categories, collate, resolve_split
from .evaluation import DetectionEvaluator, run_inference
from .model import ENCODER_PREFIX, build_mask_rcnn, encoder_of
from .sampler import RepeatFactorSampler, repeat_factors
from .transforms import build_train_transforms

__all__ = ["train", "evaluate", "DetTask", "build_datasets", "step_schedule"]

_log = logging.getLogger("target_ssl")


def build_datasets(cfg: DetConfig, train: bool = True) -> tuple[CocoInstances | None, CocoInstances]:
    """(train set or None, validation set) of `cfg.data`; checks that both share the categories."""
    val_ds = CocoInstances(resolve_split(cfg.data, "val"), train=False, max_images=cfg.eval.max_images,
                           class_agnostic=cfg.data.class_agnostic)
    if not train:
        return None, val_ds
    train_ds = CocoInstances(
        resolve_split(cfg.data, "train"),
        train=True,
        transforms=build_train_transforms(cfg.data),
        filter_empty=cfg.data.filter_empty,
        seed=cfg.run.seed,
        class_agnostic=cfg.data.class_agnostic,
    )
    check_same_categories(train_ds, val_ds)
    return train_ds, val_ds


def step_schedule(cfg: DetConfig, iters_per_epoch: int) -> tuple[int, list[int], int]:
    """(total steps, milestone steps, warmup steps) of the run.

    Epoch milestones become `epoch * iters_per_epoch`; with `solver.max_iters` the run is
    `max_iters` long and the milestones keep their fraction of it. Explicit `optim.milestones`
    (steps) win over the epoch ones.
    """
    if any(not 0 < m < cfg.solver.epochs for m in cfg.solver.milestones):
        raise ConfigError(
            f"solver.milestones must lie inside (0, solver.epochs={cfg.solver.epochs}), got {cfg.solver.milestones}"
        )
    full = cfg.solver.epochs * iters_per_epoch
    total = full if cfg.solver.max_iters is None else int(cfg.solver.max_iters)
    if total <= 0:
        raise ValueError(f"the run has {total} steps; check solver.epochs / solver.max_iters")
    if cfg.optim.milestones:
        milestones = [int(m) for m in cfg.optim.milestones]
    else:
        milestones = [round(e * iters_per_epoch * total / full) for e in cfg.solver.milestones]
    milestones = sorted({m for m in milestones if 0 < m < total})
    warmup = min(cfg.optim.warmup_steps, total - 1)
    return total, milestones, warmup


def _val_loader(cfg: DetConfig, val_ds: CocoInstances, info: DistInfo) -> DataLoader:
    # Each rank scores a disjoint strided share; no padding, so no image is counted twice.
    shard = Subset(val_ds, list(range(info.rank, len(val_ds), info.world_size)))
    return DataLoader(
        shard,
        batch_size=cfg.eval.batch_size,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
        pin_memory=info.device.type == "cuda",
    )


def _build_model(
    cfg: DetConfig, dataset: CocoInstances, info: DistInfo, with_weights: bool = True
) -> nn.Module:
    """The configured detector for `dataset`'s classes (the federated loss weights its classes by
    the dataset's image counts)."""
    model_cfg = cfg.model if with_weights else dataclasses.replace(cfg.model, weights=None)
    counts = dataset.class_image_counts() if cfg.model.cls_loss == "federated" else None
    model = build_mask_rcnn(
        model_cfg,
        dataset.num_classes,
        test_size=cfg.data.test_size,
        test_max_size=cfg.data.test_max_size,
        detections_per_image=cfg.eval.detections_per_image,
        score_threshold=cfg.eval.score_threshold,
        allow_pickle=cfg.run.allow_pickle,
        class_image_counts=counts,
    )
    if info.distributed and info.device.type == "cuda":
        # Per-GPU batches are 2 images: BatchNorm in the adapter needs statistics over all GPUs.
        # (SyncBatchNorm has no CPU kernel; gloo runs keep per-process BatchNorm.)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(info.device)


def _evaluate_model(
    cfg: DetConfig, model: nn.Module, val_ds: CocoInstances, ctx: RunContext, tag: str, save_results: bool
) -> dict:
    """COCO / LVIS metrics of `model` (unwrapped, the same on every rank) on the validation split."""
    evaluator = DetectionEvaluator(
        cfg.data.kind,
        val_ds.coco,
        val_ds.files.ann_file,
        val_ds.label_to_cat_id,
        max_dets=cfg.eval.detections_per_image,
        backend=cfg.eval.backend,
        class_agnostic=cfg.data.class_agnostic,
    )
    run_inference(model, _val_loader(cfg, val_ds, ctx.info), evaluator, ctx.device, ctx.precision, desc=tag)
    metrics = evaluator.evaluate(ctx.run_dir / "eval", tag=tag, save_results=save_results)
    return all_gather_object(metrics)[0]  # rank 0 scored; every rank needs the numbers


def _check_batch_size(cfg: DetConfig, info: DistInfo) -> int:
    if cfg.solver.batch_size % info.world_size:
        raise ConfigError(
            f"solver.batch_size={cfg.solver.batch_size} is not divisible by the {info.world_size} processes; "
            f"use a multiple of {info.world_size}"
        )
    return cfg.solver.batch_size // info.world_size


def _train_sampler(cfg: DetConfig, train_ds: CocoInstances) -> ResumableSampler:
    if cfg.data.repeat_factor_threshold is None:
        return ResumableSampler(len(train_ds), shuffle=True, seed=cfg.run.seed)
    factors = repeat_factors(train_ds.categories_per_image(), cfg.data.repeat_factor_threshold)
    sampler = RepeatFactorSampler(factors, seed=cfg.run.seed)
    _log.info("repeat-factor sampling (t=%g): %d images -> %d samples per epoch",
              cfg.data.repeat_factor_threshold, len(train_ds), sampler.dataset_len)
    return sampler


class DetTask(Task):
    """Mask R-CNN fine-tuning (epochs -> steps, step decay); COCO / LVIS evaluation every
    `eval.every_epochs` epochs and at the end."""

    name = "detection"
    best_metric = "bbox_AP"
    run_length_keys = ("solver.epochs", "solver.max_iters", "solver.milestones", "eval.every_epochs",
                       "data.num_workers")

    def __init__(self, cfg: DetConfig) -> None:
        self.cfg = cfg

    def build(self, ctx: RunContext) -> TrainSetup:
        cfg = self.cfg
        bpg = _check_batch_size(cfg, ctx.info)
        train_ds, self.val_ds = build_datasets(cfg, train=True)
        sampler = _train_sampler(cfg, train_ds)
        self.steps_per_epoch = sampler.num_samples // bpg
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{len(train_ds)} training images give no full batch of {cfg.solver.batch_size}; lower solver.batch_size"
            )
        total, milestones, warmup = step_schedule(cfg, self.steps_per_epoch)
        optim_cfg = dataclasses.replace(cfg.optim, milestones=tuple(milestones), warmup_steps=warmup)
        model = _build_model(cfg, train_ds, ctx.info)
        if not cfg.model.weights:  # said here, not in the builder, which also serves evaluation and pictures
            _log.info("encoder %s: random initialisation (model.weights is None)", cfg.model.arch)
        optimizer = build_adamw(
            model, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas,
            layer_decay=cfg.optim.layer_decay, num_layers=encoder_of(model).depth, prefix=ENCODER_PREFIX,
            eps=cfg.optim.eps,
        )  # fmt: skip
        self.meta_ = {"arch": cfg.model.arch, "adapter": cfg.model.adapter, "num_classes": train_ds.num_classes,
                      "cat_ids": train_ds.cat_ids, "task": "mask_rcnn"}  # fmt: skip
        _log.info("Mask R-CNN %s + %s, %d classes, %d train / %d val images, milestones %s, warmup %d",
                  cfg.model.arch, cfg.model.adapter, train_ds.num_classes, len(train_ds), len(self.val_ds),
                  milestones, warmup)  # fmt: skip
        return TrainSetup(
            config=cfg, model=model, optimizer=optimizer, dataset=train_ds, sampler=sampler,
            collate_fn=collate, batch_size=bpg, total_steps=total, steps_per_epoch=self.steps_per_epoch,
            schedule=schedule_from_config(optim_cfg, total), base_lr=cfg.optim.lr,
            num_workers=cfg.data.num_workers, clip_grad=cfg.optim.clip_grad,
            max_skipped_fraction=cfg.data.max_skipped_fraction, min_seen=min(len(train_ds), 1000),
        )  # fmt: skip

    def step(self, model: nn.Module, batch: dict, ctx: RunContext) -> dict[str, torch.Tensor]:
        # uint8 over the bus (4x smaller), then [0, 1] floats; the model normalises with mean / std.
        images = [img.to(ctx.device, non_blocking=True).float().div_(255) for img in batch["images"]]
        targets = [{k: (v.to(ctx.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
                   for t in batch["targets"]]  # fmt: skip
        losses = model(images, targets)
        return {"loss": sum(losses.values()), **losses}

    def evaluate_at(self, step: int) -> bool:
        every = self.cfg.eval.every_epochs
        return every > 0 and step % (every * self.steps_per_epoch) == 0

    def evaluate(self, model: nn.Module, ctx: RunContext, tag: str) -> dict:
        if tag.startswith("step_"):
            tag = f"epoch_{int(tag[5:]) // self.steps_per_epoch:03d}"
        return _evaluate_model(self.cfg, model, self.val_ds, ctx, tag, save_results=tag == "final")

    def meta(self) -> dict:
        return self.meta_


def train(cfg: DetConfig) -> dict[str, Any]:
    """Fine-tune Mask R-CNN as configured; returns the trainer's result (`engine.trainer`): the final
    metrics (AP in percent, see `evaluation`), `best_bbox_AP`, `step`, `checkpoint`, ..."""
    return fit(DetTask(cfg), cfg)


def _detector_state(path: str | Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    obj = load_checkpoint(path, allow_pickle=allow_pickle)
    state = obj.get("model", obj)
    if not any(k.startswith("roi_heads.") for k in state):
        raise ConfigError(
            f"{path} holds no Mask R-CNN weights (no roi_heads.* keys); --eval-only needs a detector checkpoint "
            "written by train_det.py (last.pth / best.pth). An encoder checkpoint goes to --weights for training."
        )
    return state


def evaluate(cfg: DetConfig) -> dict[str, Any]:
    """Score the detector checkpoint `cfg.eval.checkpoint` on the validation split.

    Writes `eval/eval_results.json` (COCO results format) and `eval/eval_metrics.json` under
    `run.output_dir`; returns the metrics (AP in percent).
    """
    if not cfg.eval.checkpoint:
        raise ValueError("evaluation needs a detector checkpoint: --eval-only --weights run/last.pth")
    ctx = open_run(cfg.run)
    _, val_ds = build_datasets(cfg, train=False)
    model = _build_model(cfg, val_ds, ctx.info, with_weights=False)
    state = _detector_state(cfg.eval.checkpoint, cfg.run.allow_pickle)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{cfg.eval.checkpoint} does not fit the configured detector ({cfg.model.arch}, {cfg.model.adapter}, "
            f"{val_ds.num_classes} classes): {str(e).splitlines()[0]}; evaluate it with the config it was trained with "
            "(its run directory has config.py)"
        ) from e
    metrics = _evaluate_model(cfg, model, val_ds, ctx, "eval", save_results=True)
    barrier()
    return metrics
