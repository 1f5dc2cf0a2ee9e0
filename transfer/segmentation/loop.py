"""UperNet training loop (iteration-based, as the reference recipe) on the shared engine.

    train(cfg) -> {"mIoU", "mAcc", "aAcc", "best_mIoU", "best_step", "step", "checkpoint", ...}
    evaluate_only(cfg, checkpoint) -> the same metrics for a trained UperNet checkpoint

One process per device (plain `python`, or `torchrun` for DDP: NCCL on GPUs, gloo on CPUs);
`solver.batch_size` is the total over processes. BatchNorm becomes SyncBatchNorm under DDP on GPUs
(torch's SyncBatchNorm has no CPU implementation; CPU DDP keeps per-process BatchNorm).

Exact resume: checkpoints hold the model, optimizer, grad scaler, step, every rank's RNG state and
the sampler position; the data order is a function of (seed, epoch) and each sample's augmentation
a function of (seed, epoch, index), so a resumed run continues as if never stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

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
    init_distributed,
    seed_everything,
    unwrap_model,
    wrap_ddp,
)
from engine.guards import check_finite, save_on_interrupt
from engine.logging import MetricLogger, ThroughputMeter, format_seconds, progress, setup_logging
from engine.optim import build_adamw, clip_grad
from engine.precision import autocast, make_grad_scaler, resolve_precision
from engine.sampler import ResumableSampler
from engine.schedules import schedule_from_config, set_lr
from engine.skips import SkipBudget
from ssl_backbones.checkpoint import load_encoder_weights

from .config import SegConfig
from .data import SegDataset, collate_train, read_class_names, single_thread_cv2
from .evaluation import evaluate
from .model import UperNet, build_upernet
from .transforms import EvalTransform, TrainTransform

_log = logging.getLogger("target_ssl")
_LOSS_KEYS = ("loss", "loss_seg", "loss_aux")


def resolve_classes(cfg: SegConfig) -> tuple[list[str], int]:
    """Class names and K from the config / dataset; they must agree when both are given."""
    names = read_class_names(cfg.data.root, cfg.data.classes, cfg.data.num_classes)
    k = cfg.data.num_classes if cfg.data.num_classes is not None else len(names)
    if len(names) != k:
        raise ConfigError(
            f"data.num_classes={k} but {len(names)} class names were found (data.classes or classes.txt "
            f"under {cfg.data.root}); make them agree"
        )
    return names, k


def build_model(cfg: SegConfig, num_classes: int) -> UperNet:
    """The UperNet of `cfg.model`, encoder initialised from `cfg.model.weights` (None: random)."""
    m = cfg.model
    overrides = {k: v for k, v in (("embed_dim", m.embed_dim), ("depth", m.depth), ("num_heads", m.num_heads)) if v is not None}
    model = build_upernet(
        m.arch,
        num_classes,
        channels=m.channels,
        aux_channels=m.aux_channels,
        aux_weight=m.aux_weight,
        dropout=m.dropout,
        drop_path=m.drop_path,
        img_size=cfg.data.crop_size[0],
        out_indices=m.out_indices,
        grad_checkpointing=m.grad_checkpointing,
        init_values=m.layer_scale,
        **overrides,
    )
    if m.weights:
        load_encoder_weights(model.backbone.encoder, m.weights, allow_pickle=cfg.run.allow_pickle)
    return model


def _state(model: nn.Module, optimizer, scaler, step: int, epoch: int, sampler_state: dict, cfg: SegConfig,
           best: dict) -> dict:
    return {
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "epoch": epoch,
        "rng": all_gather_object(capture_rng_state()),
        "sampler": sampler_state,
        "config": config_to_dict(cfg),
        "best": best,
        "meta": {"task": "segmentation", "arch": cfg.model.arch},
    }


def _check_batch(cfg: SegConfig, info: DistInfo, sync_bn: bool) -> int:
    world = info.world_size
    if cfg.solver.batch_size % world:
        raise ConfigError(
            f"solver.batch_size={cfg.solver.batch_size} is not divisible by the {world} processes; "
            "choose a multiple of the number of processes"
        )
    per_rank = cfg.solver.batch_size // world
    # The 1x1 pooling branch of the PPM normalises over the batch alone: BatchNorm needs > 1 value.
    if per_rank < 2 and not (sync_bn and cfg.solver.batch_size >= 2):
        raise ConfigError(
            f"{per_rank} image(s) per process: BatchNorm in the UperNet head needs at least 2 images per "
            "batch (per process unless SyncBatchNorm is active on GPUs); raise solver.batch_size"
        )
    return per_rank


def _load_model_state(path: str | Path, allow_pickle: bool) -> dict:
    state = load_checkpoint(path, allow_pickle=allow_pickle)
    sd = state.get("model", state)
    if not any(k.startswith("decode_head.") for k in sd):
        raise ConfigError(
            f"{path} holds no UperNet weights (no decode_head.* keys): it looks like an encoder checkpoint. "
            "Evaluation needs a checkpoint written by train_seg (best.pth / last.pth); to start "
            "training from an encoder use model.weights (--weights without --eval-only)"
        )
    return sd


def evaluate_only(cfg: SegConfig, checkpoint: str | Path | None = None) -> dict:
    """Evaluate a trained UperNet checkpoint (`checkpoint` or `cfg.eval.checkpoint`) on the validation split.

    Writes `eval_results.json` (per-class table) and `eval_metrics.json` into `run.output_dir`.
    """
    checkpoint = checkpoint or cfg.eval.checkpoint
    if not checkpoint:
        raise ConfigError("--eval-only needs a checkpoint: pass --weights CKPT or --set eval.checkpoint=CKPT")
    info = init_distributed(cfg.run.device)
    run_dir = Path(cfg.run.output_dir)
    setup_logging(run_dir)
    names, k = resolve_classes(cfg)
    model = build_model(_without_weights(cfg), k)
    state = _load_model_state(checkpoint, cfg.run.allow_pickle)
    pos_key = f"{UperNet.ENCODER_PREFIX}.pos_embed"
    if model.backbone.encoder.pos_embed_kind == "sincos" and pos_key in state:
        # A fixed sin-cos table is a function of the stored grid (the training crop size), not a
        # weight: keep this model's own, so any data.crop_size evaluates the checkpoint.
        state[pos_key] = model.backbone.encoder.pos_embed.detach().clone()
    model.load_state_dict(state)
    model.to(info.device)
    precision = resolve_precision(cfg.run.precision, info.device)
    val_ds = _val_dataset(cfg, k)
    metrics = evaluate(model, val_ds, cfg.eval, info.device, precision, cfg.data.num_workers, names,
                       run_dir / "eval_results.json")
    summary = {key: metrics[key] for key in ("mIoU", "mAcc", "aAcc", "num_images", "skipped_images")}
    summary["checkpoint"] = str(checkpoint)
    if info.is_main:
        (run_dir / "eval_metrics.json").write_text(json.dumps(summary, indent=2))
        _log.info("mIoU %.2f  mAcc %.2f  aAcc %.2f", metrics["mIoU"], metrics["mAcc"], metrics["aAcc"])
    return summary


def _without_weights(cfg: SegConfig) -> SegConfig:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None))


def _val_dataset(cfg: SegConfig, num_classes: int) -> SegDataset:
    return SegDataset(
        cfg.data.root, "val", num_classes, EvalTransform(scale=cfg.data.scale),
        reduce_zero_label=cfg.data.reduce_zero_label, max_images=cfg.eval.max_images,
    )


def train(cfg: SegConfig) -> dict:
    """Train UperNet per `cfg`; evaluate periodically and at the end. Returns the final metrics.

    Writes into `cfg.run.output_dir`: config.json / config.py, log.txt, metrics.jsonl (every
    iteration's losses and lr; eval results), TensorBoard events (tb/), checkpoint_*.pth +
    last.pth, best.pth (highest mIoU), eval_results.json (per-class IoU of the last evaluation).
    """
    start_time = time.perf_counter()
    total = cfg.solver.iterations
    if cfg.optim.warmup_steps >= total:
        raise ConfigError(
            f"optim.warmup_steps={cfg.optim.warmup_steps} must be smaller than solver.iterations={total}; "
            "shorten the warmup too (e.g. --set optim.warmup_steps=...)"
        )
    info = init_distributed(cfg.run.device)
    device = info.device
    run_dir = Path(cfg.run.output_dir)
    setup_logging(run_dir)
    seed_everything(cfg.run.seed, info.rank)
    save_config(cfg, run_dir)
    precision = resolve_precision(cfg.run.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels

    names, num_classes = resolve_classes(cfg)
    model = build_model(cfg, num_classes)
    if not cfg.model.weights:  # said here, not in the builder, which also serves evaluation and pictures
        _log.info("encoder %s: random initialisation (model.weights is None)", cfg.model.arch)
    sync_bn = info.distributed and device.type == "cuda"
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    per_rank_batch = _check_batch(cfg, info, sync_bn)
    model.to(device)
    optimizer = build_adamw(
        model, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.layer_decay,
        num_layers=model.backbone.encoder.depth, prefix=UperNet.ENCODER_PREFIX, eps=cfg.optim.eps,
    )
    schedule = schedule_from_config(cfg.optim, total)
    scaler = make_grad_scaler(precision, device)

    train_ds = SegDataset(
        cfg.data.root, "train", num_classes,
        TrainTransform(
            crop_size=tuple(cfg.data.crop_size), scale=tuple(cfg.data.scale), ratio_range=tuple(cfg.data.ratio_range),
            cat_max_ratio=cfg.data.cat_max_ratio, flip_prob=cfg.data.flip_prob, photometric=cfg.data.photometric,
        ),
        reduce_zero_label=cfg.data.reduce_zero_label, seed=cfg.run.seed,
    )
    val_ds = _val_dataset(cfg, num_classes)
    sampler = ResumableSampler(len(train_ds), shuffle=True, seed=cfg.run.seed)
    steps_per_epoch = sampler.num_samples // per_rank_batch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{len(train_ds)} training images cannot fill one batch of {per_rank_batch} per process; "
            "lower solver.batch_size"
        )

    ckpt = CheckpointManager(run_dir, keep_last=cfg.run.keep_last)
    step, best = 0, {"mIoU": float("-inf"), "step": -1}
    skips = SkipBudget(cfg.data.max_skipped_fraction, min_seen=min(len(train_ds), 200))
    resume_path = find_resume_checkpoint(cfg.run.resume, run_dir)
    if resume_path is not None:
        state = load_checkpoint(resume_path, allow_pickle=cfg.run.allow_pickle)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        best = dict(state.get("best", best))
        skips.load_state_dict(state.get("skips", {}))
        sampler.load_state_dict(state["sampler"])  # refuses another seed / dataset / world size
        restore_rng_state(state["rng"])
        _log.info("resumed from %s at iteration %d", resume_path, step)
    ddp_model = wrap_ddp(model, info)

    logger = MetricLogger(run_dir)
    meter = ThroughputMeter()
    bar = progress(total=total, desc="seg train", initial=step)
    last_metrics: dict = {}

    def state_now() -> dict:
        e, b = divmod(step, steps_per_epoch)
        sampler.set_epoch(e)
        sampler_state = sampler.state_dict(b, per_rank_batch)
        return {**_state(model, optimizer, scaler, step, e, sampler_state, cfg, best), "skips": skips.state_dict()}

    def run_eval() -> dict:
        nonlocal best
        m = evaluate(model, val_ds, cfg.eval, device, precision, cfg.data.num_workers, names,
                     run_dir / "eval_results.json")
        logger.log(step, {"val/mIoU": m["mIoU"], "val/mAcc": m["mAcc"], "val/aAcc": m["aAcc"]})
        _log.info("iteration %d: mIoU %.2f  mAcc %.2f  aAcc %.2f", step, m["mIoU"], m["mAcc"], m["aAcc"])
        if math.isfinite(m["mIoU"]) and m["mIoU"] > best["mIoU"]:
            best = {"mIoU": m["mIoU"], "step": step}
            ckpt.save_named(state_now(), "best")
        return m

    if cfg.data.num_workers:
        single_thread_cv2()  # before the first fork (see its docstring)
    model.train()
    with save_on_interrupt(lambda: ckpt.save(state_now(), step)):
        while step < total:
            epoch, start_batch = divmod(step, steps_per_epoch)
            sampler.set_epoch(epoch)
            sampler.set_start_batch(start_batch, per_rank_batch)
            train_ds.set_epoch(epoch)
            loader = DataLoader(
                train_ds, batch_size=per_rank_batch, sampler=sampler, num_workers=cfg.data.num_workers,
                collate_fn=collate_train, drop_last=True, pin_memory=device.type == "cuda",
                generator=sampler.loader_generator, worker_init_fn=single_thread_cv2,
            )
            for batch in loader:
                skips.update(batch["skipped"], per_rank_batch + batch["skipped"], batch["skipped_files"])
                skips.sync(device)  # every step, on every rank: the same verdict
                skips.check()
                lr = set_lr(optimizer, cfg.optim.lr, schedule(step))
                images = batch["image"].to(device, non_blocking=True)
                labels = batch["label"].to(device, non_blocking=True)
                with autocast(precision, device):
                    losses = ddp_model(images, labels)
                # One sync per iteration: the mean losses over processes, for the guard and the log.
                keys = [k for k in _LOSS_KEYS if k in losses]
                logged = all_reduce_mean(torch.stack([losses[k].detach().float() for k in keys]))
                values = dict(zip(keys, logged.tolist()))
                check_finite(values["loss"], step, on_fail=lambda: ckpt.save_named(state_now(), "nonfinite"),
                             components=values)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(losses["loss"]).backward()
                if cfg.optim.clip_grad:
                    scaler.unscale_(optimizer)
                    clip_grad(model.parameters(), cfg.optim.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                step += 1

                meter.update(per_rank_batch * info.world_size)
                logger.log(step, {**{f"train/{k}": v for k, v in values.items()}, "train/lr": lr})
                bar.update(1)
                bar.set_postfix(meter.postfix(step, total, loss=values["loss"], lr=lr))
                if step % cfg.run.log_every == 0 or step == total:
                    _log.info(
                        "iteration %d/%d  loss %.4f  lr %.3e  %.1f img/s  eta %s", step, total, values["loss"], lr,
                        meter.images_per_sec, format_seconds(meter.eta_seconds(step, total)),
                    )
                if step % cfg.run.ckpt_every_steps == 0 and step < total:
                    ckpt.save(state_now(), step)
                if cfg.eval.every and step % cfg.eval.every == 0 and step < total:
                    last_metrics = run_eval()
                if step >= total:
                    break
    bar.close()
    last_metrics = run_eval()
    final_path = ckpt.save(state_now(), step)
    logger.close()
    barrier()
    result = {
        "mIoU": last_metrics["mIoU"],
        "mAcc": last_metrics["mAcc"],
        "aAcc": last_metrics["aAcc"],
        "IoU": last_metrics["IoU"],
        "class_names": names,
        "best_mIoU": best["mIoU"],
        "best_step": best["step"],
        "step": step,
        "checkpoint": str(final_path or run_dir / "last.pth"),
        "best_checkpoint": str(run_dir / "best.pth"),
        "run_dir": str(run_dir),
        "skipped_train_reads": skips.skipped,
        "skipped_val_images": last_metrics["skipped_images"],
        "wall_time_s": time.perf_counter() - start_time,
    }
    if info.is_main:
        (run_dir / "final_metrics.json").write_text(json.dumps(result, indent=2))
        _log.info("done: mIoU %.2f (best %.2f at iteration %d), %s", result["mIoU"], best["mIoU"], best["step"],
                  format_seconds(result["wall_time_s"]))
    return result
