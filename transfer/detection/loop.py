"""Mask R-CNN fine-tuning and evaluation loops (single process, or DDP under torchrun).

`train(cfg)` runs the paper's recipe on the shared engine: AdamW with weight-decay exclusions and
optional layer-wise lr decay, linear warmup + step decay (epochs -> steps), mixed precision
(bf16 on GPU, fp32 on CPU), gradient clipping, NaN guard, atomic checkpoints with exact resume,
periodic COCO / LVIS evaluation with `last` and `best` (by box AP) checkpoints, a progress bar,
`metrics.jsonl` + TensorBoard. `evaluate(cfg)` scores a trained detector (`--eval-only`).

Run directory: `config.json`/`config.py`, `log.txt`, `metrics.jsonl`, `tb/`, `checkpoint_*.pth`,
`last.pth`, `best.pth`, `eval/<tag>_metrics.json`, `eval/final_results.json` (COCO results
format), and `metrics.json` (the final metrics, AP in percent).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

from engine.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    find_resume_checkpoint,
    load_checkpoint,
    restore_rng_state,
)
from engine.config import ConfigError, config_to_dict, save_config
from engine.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    init_distributed,
    seed_everything,
    unwrap_model,
    wrap_ddp,
)
from engine.guards import check_finite, save_on_interrupt
from engine.logging import MetricLogger, ThroughputMeter, progress, setup_logging
from engine.optim import build_adamw, clip_grad
from engine.precision import autocast, make_grad_scaler, resolve_precision
from engine.sampler import ResumableSampler
from engine.schedules import schedule_from_config, set_lr
from engine.skips import SkipBudget

from .config import DetConfig
from .datasets import CocoInstances, check_same_categories, collate, resolve_split
from .evaluation import DetectionEvaluator, run_inference
from .model import ENCODER_PREFIX, build_mask_rcnn, encoder_of
from .sampler import RepeatFactorSampler, repeat_factors
from .transforms import build_train_transforms

__all__ = ["train", "evaluate", "build_datasets", "step_schedule"]

_log = logging.getLogger("target_ssl")


def build_datasets(cfg: DetConfig, train: bool = True) -> tuple[CocoInstances | None, CocoInstances]:
    """(train set or None, validation set) of `cfg.data`; checks that both share the categories."""
    val_ds = CocoInstances(resolve_split(cfg.data, "val"), train=False, max_images=cfg.eval.max_images)
    if not train:
        return None, val_ds
    train_ds = CocoInstances(
        resolve_split(cfg.data, "train"),
        train=True,
        transforms=build_train_transforms(cfg.data),
        filter_empty=cfg.data.filter_empty,
        seed=cfg.run.seed,
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


def _to_device(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]


def _images_to_device(images: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    # uint8 over the bus (4x smaller), then [0, 1] floats; the model normalises with mean / std.
    return [img.to(device, non_blocking=True).float().div_(255) for img in images]


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


def _build_model(cfg: DetConfig, num_classes: int, info: DistInfo, with_weights: bool = True) -> nn.Module:
    model_cfg = cfg.model if with_weights else dataclasses.replace(cfg.model, weights=None)
    model = build_mask_rcnn(
        model_cfg,
        num_classes,
        test_size=cfg.data.test_size,
        test_max_size=cfg.data.test_max_size,
        detections_per_image=cfg.eval.detections_per_image,
        score_threshold=cfg.eval.score_threshold,
        allow_pickle=cfg.run.allow_pickle,
    )
    if info.distributed and info.device.type == "cuda":
        # Per-GPU batches are 2 images: BatchNorm in the adapter needs statistics over all GPUs.
        # (SyncBatchNorm has no CPU kernel; gloo runs keep per-process BatchNorm.)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(info.device)


def _evaluate_model(
    cfg: DetConfig,
    model: nn.Module,
    val_ds: CocoInstances,
    info: DistInfo,
    precision: str,
    tag: str,
    save_results: bool,
) -> dict:
    evaluator = DetectionEvaluator(
        cfg.data.kind,
        val_ds.coco,
        val_ds.files.ann_file,
        val_ds.label_to_cat_id,
        max_dets=cfg.eval.detections_per_image,
    )
    core = unwrap_model(model)
    broadcast_buffers(core)  # every process runs rank 0's model (the one its checkpoints hold)
    run_inference(core, _val_loader(cfg, val_ds, info), evaluator, info.device, precision, desc=tag)
    metrics = evaluator.evaluate(Path(cfg.run.output_dir) / "eval", tag=tag, save_results=save_results)
    return all_gather_object(metrics)[0]  # rank 0 scored; every rank needs the numbers


def _check_batch_size(cfg: DetConfig, info: DistInfo) -> int:
    if cfg.solver.batch_size % info.world_size:
        raise ValueError(
            f"solver.batch_size={cfg.solver.batch_size} is not divisible by the {info.world_size} processes; "
            f"use a multiple of {info.world_size}"
        )
    return cfg.solver.batch_size // info.world_size


def train(cfg: DetConfig) -> dict[str, Any]:
    """Fine-tune Mask R-CNN as configured; returns the final metrics (AP in percent) and paths.

    Returns:
        {"bbox_AP", "segm_AP", ... (see `evaluation`), "best_bbox_AP", "steps", "epochs",
        "skipped_images", "train_seconds", "output_dir", "last_checkpoint", "best_checkpoint"}.
    """
    info = init_distributed(cfg.run.device)
    out = Path(cfg.run.output_dir)
    setup_logging(out)
    precision = resolve_precision(cfg.run.precision, info.device)
    seed_everything(cfg.run.seed, info.rank)
    save_config(cfg, out)
    bpg = _check_batch_size(cfg, info)

    train_ds, val_ds = build_datasets(cfg, train=True)
    assert train_ds is not None
    if cfg.data.repeat_factor_threshold is not None:
        factors = repeat_factors(train_ds.categories_per_image(), cfg.data.repeat_factor_threshold)
        sampler: ResumableSampler = RepeatFactorSampler(factors, seed=cfg.run.seed)
        _log.info("repeat-factor sampling (t=%g): %d images -> %d samples per epoch",
                  cfg.data.repeat_factor_threshold, len(train_ds), sampler.dataset_len)
    else:
        sampler = ResumableSampler(len(train_ds), shuffle=True, seed=cfg.run.seed)
    iters_per_epoch = sampler.num_samples // bpg
    if iters_per_epoch == 0:
        raise ValueError(
            f"{len(train_ds)} training images give no full batch of {cfg.solver.batch_size}; lower solver.batch_size"
        )
    total_steps, milestones, warmup = step_schedule(cfg, iters_per_epoch)
    num_epochs = math.ceil(total_steps / iters_per_epoch)
    optim_cfg = dataclasses.replace(cfg.optim, milestones=tuple(milestones), warmup_steps=warmup)
    schedule = schedule_from_config(optim_cfg, total_steps)

    model = _build_model(cfg, train_ds.num_classes, info)
    if not cfg.model.weights:  # said here, not in the builder, which also serves evaluation and pictures
        _log.info("encoder %s: random initialisation (model.weights is None)", cfg.model.arch)
    core = model
    encoder = encoder_of(core)
    optimizer = build_adamw(
        core,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=cfg.optim.betas,
        layer_decay=cfg.optim.layer_decay,
        num_layers=encoder.depth,
        prefix=ENCODER_PREFIX,
        eps=cfg.optim.eps,
    )
    scaler = make_grad_scaler(precision, info.device)
    model = wrap_ddp(model, info)
    params = [p for p in core.parameters() if p.requires_grad]
    ckpt = CheckpointManager(out, keep_last=cfg.run.keep_last)
    metric_log = MetricLogger(out)

    step, start_epoch, start_batch = 0, 0, 0
    best: dict[str, Any] = {"bbox_AP": -1.0, "step": -1}
    skips = SkipBudget(cfg.data.max_skipped_fraction, min_seen=min(len(train_ds), 1000))
    resume_path = find_resume_checkpoint(cfg.run.resume, out)
    if resume_path is not None:
        state = load_checkpoint(resume_path, allow_pickle=cfg.run.allow_pickle)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        sampler.load_state_dict(state["sampler"])
        step = int(state["step"])
        start_epoch, start_batch = sampler.epoch, sampler.start_index // bpg
        best = dict(state.get("best", best))
        skips.load_state_dict(state.get("skips", {}))  # skipped and seen, job-wide
        restore_rng_state(state["rng"])
        _log.info("resumed from %s at step %d (epoch %d, batch %d)", resume_path, step, start_epoch, start_batch)

    _log.info(
        "Mask R-CNN %s + %s, %d classes, %d train / %d val images, %d processes x %d images, "
        "%d iters/epoch, %d steps (%d epochs), milestones %s, warmup %d, precision %s, device %s",
        cfg.model.arch, cfg.model.adapter, train_ds.num_classes, len(train_ds), len(val_ds), info.world_size,
        bpg, iters_per_epoch, total_steps, num_epochs, milestones, warmup, precision, info.device,
    )

    loader = DataLoader(
        train_ds,
        batch_size=bpg,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
        drop_last=True,
        pin_memory=info.device.type == "cuda",
        generator=sampler.loader_generator,
        persistent_workers=False,
    )

    def state_dict(epoch: int, batch_index: int) -> dict:
        # Called on every rank at the same points (the rng gather is a collective).
        return {
            "model": core.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "epoch": epoch,
            "sampler": sampler.state_dict(batch_index, bpg),
            "rng": all_gather_object(capture_rng_state()),
            "best": best,
            "skips": skips.state_dict(),
            "config": config_to_dict(cfg),
            "meta": {"arch": cfg.model.arch, "adapter": cfg.model.adapter, "num_classes": train_ds.num_classes,
                     "cat_ids": train_ds.cat_ids, "task": "mask_rcnn"},
        }

    metrics: dict[str, Any] = {}
    last_eval_step = -1
    meter = ThroughputMeter()
    bar = progress(total=total_steps, initial=step, desc="train")
    window: dict[str, float] = {}
    window_n = 0
    t_start = time.perf_counter()
    model.train()
    epoch = start_epoch
    batch_index = start_batch
    with save_on_interrupt(lambda: ckpt.save_named(state_dict(epoch, batch_index), "interrupted")):
        for epoch in range(start_epoch, num_epochs):
            if step >= total_steps:
                break
            sampler.set_epoch(epoch)
            train_ds.set_epoch(epoch)
            first = start_batch if epoch == start_epoch else 0
            if first:
                sampler.set_start_batch(first, bpg)
            batch_index = first
            for batch in loader:
                images, targets, skipped = batch["images"], batch["targets"], batch["skipped"]
                if step >= total_steps:
                    break
                skips.update(skipped, len(images) + skipped, batch["skipped_files"])
                skips.sync(info.device)  # every step, on every rank: the same verdict
                skips.check()
                lr = set_lr(optimizer, cfg.optim.lr, schedule(step))
                images = _images_to_device(images, info.device)
                targets = _to_device(targets, info.device)
                with autocast(precision, info.device):
                    loss_dict = model(images, targets)
                loss = sum(loss_dict.values())
                # Same verdict on every rank (the guard's checkpoint save is a collective).
                check_finite(
                    all_reduce_mean(loss.detach().float()),
                    step,
                    on_fail=lambda e=epoch, b=batch_index: ckpt.save_named(state_dict(e, b), "nonfinite"),
                    components=loss_dict,
                )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.optim.clip_grad:
                    scaler.unscale_(optimizer)
                grad_norm = clip_grad(params, cfg.optim.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                batch_index += 1
                meter.update(len(images) * info.world_size)

                for k, v in loss_dict.items():
                    window[k] = window.get(k, 0.0) + float(v.detach())
                window["loss"] = window.get("loss", 0.0) + float(loss.detach())
                window_n += 1
                if step % cfg.run.log_every == 0 or step == total_steps:
                    means = all_reduce_mean(torch.tensor([window[k] / window_n for k in window], dtype=torch.float64))
                    record = dict(zip(window, means.tolist()))
                    record.update(lr=lr, grad_norm=float(grad_norm), epoch=epoch, images_per_s=meter.images_per_sec)
                    metric_log.log(step, record)
                    window, window_n = {}, 0
                bar.update(1)
                bar.set_postfix(meter.postfix(step, total_steps, loss=float(loss.detach()), lr=lr))
                if step % cfg.run.ckpt_every_steps == 0 and batch_index < iters_per_epoch:
                    ckpt.save(state_dict(epoch, batch_index), step)

            end_of_run = step >= total_steps
            # Position "start of the next epoch" for the end-of-epoch checkpoint.
            sampler.set_epoch(epoch + 1)
            batch_index = 0
            every = cfg.eval.every_epochs
            if end_of_run or (every > 0 and (epoch + 1) % every == 0):
                bar.clear()
                tag = "final" if end_of_run else f"epoch_{epoch + 1:03d}"
                metrics = _evaluate_model(cfg, model, val_ds, info, precision, tag, save_results=end_of_run)
                last_eval_step = step
                metric_log.log(step, {f"val/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
                if metrics["bbox_AP"] > best["bbox_AP"]:
                    best = {"bbox_AP": metrics["bbox_AP"], "segm_AP": metrics.get("segm_AP"), "step": step}
                    ckpt.save_named(state_dict(epoch + 1, 0), "best")
            ckpt.save(state_dict(epoch + 1, 0), step)
            if end_of_run:
                break
    bar.close()
    train_seconds = time.perf_counter() - t_start

    if last_eval_step != step:  # resumed after the last evaluation, or nothing left to train
        metrics = _evaluate_model(cfg, model, val_ds, info, precision, "final", save_results=True)
    if skips.skipped:
        _log.warning("%d unreadable training images were skipped (and replaced by the next ones)", skips.skipped)
    result: dict[str, Any] = {
        **{k: v for k, v in metrics.items()},
        "best_bbox_AP": best["bbox_AP"],
        "steps": step,
        "epochs": num_epochs,
        "skipped_images": skips.skipped,
        "train_seconds": round(train_seconds, 1),
        "output_dir": str(out),
        "last_checkpoint": str(out / "last.pth"),
        "best_checkpoint": str(out / "best.pth"),
    }
    if info.is_main:
        (out / "metrics.json").write_text(
            json.dumps({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in result.items()}, indent=2)
            + "\n"
        )
    metric_log.close()
    barrier()
    return result


def _detector_state(path: str | Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    obj = load_checkpoint(path, allow_pickle=allow_pickle)
    state = obj.get("model", obj)
    if not any(k.startswith("roi_heads.") for k in state):
        raise ValueError(
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
    info = init_distributed(cfg.run.device)
    out = Path(cfg.run.output_dir)
    setup_logging(out)
    precision = resolve_precision(cfg.run.precision, info.device)
    _, val_ds = build_datasets(cfg, train=False)
    model = _build_model(cfg, val_ds.num_classes, info, with_weights=False)
    state = _detector_state(cfg.eval.checkpoint, cfg.run.allow_pickle)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{cfg.eval.checkpoint} does not fit the configured detector ({cfg.model.arch}, {cfg.model.adapter}, "
            f"{val_ds.num_classes} classes): {str(e).splitlines()[0]}; evaluate it with the config it was trained with "
            "(its run directory has config.py)"
        ) from e
    metrics = _evaluate_model(cfg, model, val_ds, info, precision, "eval", save_results=True)
    barrier()
    return metrics
