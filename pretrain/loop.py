"""The pretraining loop: one process or many (torchrun), exact resume, checkpoints, encoder export.

`train(cfg)` builds everything from a `PretrainConfig`, trains, and returns the paths of the last
checkpoint and of the exported encoder. Steps are optimizer updates; with `accum_iter` > 1 each update
sums the gradients of that many micro-batches. A checkpoint is written every `run.ckpt_every_steps`
updates and at the end; `run.resume="auto"` continues from the newest one bit for bit (model,
optimizer, scaler, RNG, data position; the data order and augmentations depend only on
(seed, epoch, index)).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch
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
from engine.logging import MetricLogger, ThroughputMeter, progress, setup_logging
from engine.optim import build_adamw, clip_grad
from engine.precision import autocast, make_grad_scaler, resolve_precision
from engine.sampler import ResumableSampler
from engine.schedules import schedule_from_config, set_lr
from engine.skips import SkipBudget
from ssl_backbones.checkpoint import export_encoder, load_encoder_weights

from .config import PretrainConfig, resolve_epochs
from .data import UnlabeledImages, build_transform, collate, list_images
from .methods import build_encoder, build_masking, build_method, needs_tokenizer
from .tokenizers import PatchTokenizer, build_tokenizer, sample_patches

__all__ = ["train", "build_dataset", "build_tokenizer_for_run", "Plan", "make_plan"]

_log = logging.getLogger("target_ssl")


@dataclasses.dataclass(frozen=True)
class Plan:
    """Numbers derived from the config and the dataset size."""

    epochs: int
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    total_batch: int
    lr: float


def make_plan(cfg: PretrainConfig, num_images: int, world_size: int) -> Plan:
    s = cfg.schedule
    per_rank = num_images // world_size
    batches = per_rank // s.batch_size
    steps_per_epoch = batches // s.accum_iter
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{num_images} images over {world_size} process(es) give no full update of "
            f"{s.batch_size} x {s.accum_iter} images per process; lower --batch-size or --accum-iter"
        )
    epochs = resolve_epochs(cfg.data.name, num_images, s.epochs)
    total_steps = epochs * steps_per_epoch
    warmup_epochs = epochs / 30 if s.warmup_epochs is None else s.warmup_epochs
    warmup_steps = min(round(warmup_epochs * steps_per_epoch), total_steps - 1)
    total_batch = s.batch_size * world_size * s.accum_iter
    lr = cfg.optim.lr if s.blr is None else s.blr * total_batch / 256
    return Plan(epochs, steps_per_epoch, total_steps, warmup_steps, total_batch, lr)


def _augment_preset(cfg: PretrainConfig) -> str:
    if cfg.data.augment != "auto":
        return cfg.data.augment
    return "ade20k" if cfg.data.name == "ade20k" else "default"


def build_dataset(cfg: PretrainConfig, seed_offset: int = 0, with_masks: bool = True) -> UnlabeledImages:
    """The training images with the run's augmentation (and per-image masks)."""
    files = list_images(cfg.data.name, cfg.data.root)
    if cfg.data.max_images is not None:
        files = files[: cfg.data.max_images]
    preset = _augment_preset(cfg)
    grid = (cfg.data.img_size // cfg.model.patch_size,) * 2
    masking = build_masking(cfg.model.method, cfg.mask, grid, preset == "small") if with_masks else None
    return UnlabeledImages(
        files,
        build_transform(preset, cfg.data.img_size),
        masking,
        seed=cfg.run.seed + seed_offset,
        max_retries=cfg.data.max_retries,
    )


def build_tokenizer_for_run(cfg: PretrainConfig, device: torch.device) -> PatchTokenizer:
    """The run's tokenizer. Data-dependent kinds sample patches from augmented training crops (the
    patch distribution the targets are computed on), with their own seed stream."""
    t = cfg.tokenizer
    patches = None
    if t.kind in ("random_patches", "kmeans"):
        dataset = build_dataset(cfg, seed_offset=7919, with_masks=False)
        per_image = (cfg.data.img_size // (t.patch_size * t.downsample)) ** 2
        num_images = min(len(dataset), math.ceil(t.num_samples / per_image))
        g = torch.Generator().manual_seed(cfg.run.seed)
        subset = torch.randperm(len(dataset), generator=g)[:num_images].tolist()
        loader = DataLoader(
            torch.utils.data.Subset(dataset, subset),
            batch_size=64,
            num_workers=cfg.data.num_workers,
            collate_fn=collate,
        )
        images = (b["images"] for b in loader)
        patches = sample_patches(images, t.num_samples, t.patch_size, t.downsample, seed=cfg.run.seed)
        _log.info("tokenizer %s: %d patches sampled from %d images", t.kind, patches.shape[0], num_images)
        if patches.shape[0] < t.vocab_size:
            raise ConfigError(
                f"tokenizer {t.kind} needs at least tokenizer.vocab_size={t.vocab_size} patches but the "
                f"{num_images} sampled images give {patches.shape[0]}; lower tokenizer.vocab_size "
                "(e.g. --set tokenizer.vocab_size=1024) or raise tokenizer.num_samples / use more images"
            )
        patches = patches.to(device)
    tok = build_tokenizer(
        t.kind,
        t.vocab_size,
        t.patch_size,
        t.downsample,
        cfg.run.seed,
        patches,
        t.kmeans_iters,
        t.kmeans_batch,
    )
    return tok


def _encoder_meta(cfg: PretrainConfig, epochs: int, encoder: torch.nn.Module) -> dict[str, Any]:
    return {
        "arch": cfg.model.arch,
        "patch_size": encoder.patch_size,
        "pos_embed": encoder.pos_embed_kind,
        "method": cfg.model.method,
        "dataset": cfg.data.name,
        "epochs": epochs,
        "img_size": cfg.data.img_size,
        "embed_dim": encoder.embed_dim,
        "depth": encoder.depth,
        "num_heads": encoder.num_heads,
    }


def _is_named_arch(cfg: PretrainConfig) -> bool:
    return all(getattr(cfg.model, k) is None for k in ("embed_dim", "depth", "num_heads"))


def _to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
        if k not in ("skipped", "skipped_files")
    }


def train(cfg: PretrainConfig) -> dict[str, Any]:
    """Pretrain as configured. Returns `{"checkpoint", "encoder", "final_loss", "step", "run_dir",
    "broken_images"}` (`encoder` is None when the run stopped early at `schedule.stop_at_step`)."""
    info: DistInfo = init_distributed(cfg.run.device)
    run_dir = Path(cfg.run.output_dir)
    setup_logging(run_dir)
    seed_everything(cfg.run.seed, info.rank)
    device = info.device
    precision = resolve_precision(cfg.run.precision, device)

    dataset = build_dataset(cfg)
    plan = make_plan(cfg, len(dataset), info.world_size)
    cfg = dataclasses.replace(
        cfg,
        schedule=dataclasses.replace(cfg.schedule, epochs=plan.epochs),
        optim=dataclasses.replace(cfg.optim, lr=plan.lr, warmup_steps=plan.warmup_steps),
        run=dataclasses.replace(cfg.run, precision=precision),
    )
    save_config(cfg, run_dir)
    _log.info(
        "pretraining %s / %s on %s: %d images, %d epochs x %d steps = %d updates, batch %d (x%d processes x%d accum), "
        "lr %.3g, warmup %d, %s on %s",
        cfg.model.method, cfg.model.arch, cfg.data.name, len(dataset), plan.epochs, plan.steps_per_epoch,
        plan.total_steps, plan.total_batch, info.world_size, cfg.schedule.accum_iter, plan.lr,
        plan.warmup_steps, precision, device,
    )  # fmt: skip

    resume_path = find_resume_checkpoint(cfg.run.resume, run_dir)
    ckpt = load_checkpoint(resume_path, allow_pickle=cfg.run.allow_pickle) if resume_path else None

    tokenizer = None
    if needs_tokenizer(cfg.model):
        if ckpt is not None and "tokenizer.vocab" in ckpt["model"]:
            t = cfg.tokenizer
            tokenizer = PatchTokenizer(ckpt["model"]["tokenizer.vocab"], t.patch_size, t.downsample, t.kind)
        else:
            tokenizer = build_tokenizer_for_run(cfg, device)
    encoder = build_encoder(cfg.model, cfg.data.img_size)
    method = build_method(cfg.model, encoder, tokenizer).to(device)
    if tokenizer is not None and info.distributed:
        # Identical targets on every rank even if k-means ran non-deterministically on the GPUs.
        torch.distributed.broadcast(method.tokenizer.vocab, src=0)
    if cfg.model.init and ckpt is None:
        load_encoder_weights(method.encoder, cfg.model.init, allow_pickle=cfg.run.allow_pickle)

    optimizer = build_adamw(
        method, plan.lr, cfg.optim.weight_decay, tuple(cfg.optim.betas), eps=cfg.optim.eps
    )
    scaler = make_grad_scaler(precision, device)
    schedule = schedule_from_config(cfg.optim, plan.total_steps)
    sampler = ResumableSampler(len(dataset), shuffle=True, seed=cfg.run.seed, drop_last=True)
    monitor = SkipBudget(cfg.data.max_broken_fraction, cfg.data.broken_check_after, what="data.max_broken_fraction")
    meta = _encoder_meta(cfg, plan.epochs, encoder)
    ckpt_manager = CheckpointManager(run_dir, keep_last=cfg.run.keep_last)

    step = 0
    if ckpt is not None:
        method.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        sampler.load_state_dict(ckpt["sampler"])
        monitor.load_state_dict(ckpt.get("skips", {}))
        step = int(ckpt["step"])
        _log.info("resumed from %s at update %d", resume_path, step)
        restore_rng_state(ckpt["rng"])
        del ckpt

    # The tokenizer vocabulary is identical on every rank: no need to broadcast buffers each step.
    model = wrap_ddp(method, info, broadcast_buffers=False)
    params = [p for p in method.parameters() if p.requires_grad]
    batch_size, accum = cfg.schedule.batch_size, cfg.schedule.accum_iter
    stop_at = min(plan.total_steps, cfg.schedule.stop_at_step or plan.total_steps)

    def state(gather_rng: bool = True) -> dict:
        rng = (
            all_gather_object(capture_rng_state()) if gather_rng and info.distributed else capture_rng_state()
        )
        # Position within the sampler's current epoch (a finished epoch reads as fully consumed);
        # resume derives epoch and offset from `step`, the sampler entry guards seed / size / world.
        consumed = (step - sampler.epoch * plan.steps_per_epoch) * accum
        return {
            "model": unwrap_model(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "epoch": step // plan.steps_per_epoch,
            "rng": rng,
            "sampler": sampler.state_dict(consumed, batch_size),
            "skips": monitor.state_dict(),
            "config": config_to_dict(cfg),
            "meta": meta,
        }

    logger = MetricLogger(run_dir)
    meter = ThroughputMeter()
    bar = progress(total=plan.total_steps, initial=step, desc=f"pretrain {cfg.model.method}")
    last_path = resume_path
    loss_value = float("nan")
    window: dict[str, float] = {}
    window_steps = 0
    model.train()

    try:
        with save_on_interrupt(lambda: ckpt_manager.save(state(gather_rng=False), step)):
            while step < stop_at:
                epoch, in_epoch = divmod(step, plan.steps_per_epoch)
                sampler.set_epoch(epoch)
                sampler.set_start_batch(in_epoch * accum, batch_size)
                dataset.set_epoch(epoch)
                loader = DataLoader(
                    dataset,
                    batch_size=batch_size,
                    sampler=sampler,
                    num_workers=cfg.data.num_workers,
                    collate_fn=collate,
                    pin_memory=device.type == "cuda",
                    drop_last=True,
                    generator=sampler.loader_generator,
                    persistent_workers=False,
                )
                batches = iter(loader)
                for _ in range(in_epoch, plan.steps_per_epoch):
                    if step >= stop_at:
                        break
                    lr = set_lr(optimizer, plan.lr, schedule(step))
                    stats: dict[str, float] = {}
                    for micro in range(accum):
                        batch = next(batches)
                        monitor.update(batch["skipped"], len(batch["images"]) + batch["skipped"], batch["skipped_files"])
                        monitor.sync(device)  # every micro-batch, on every rank: the same verdict
                        monitor.check()
                        batch = _to_device(batch, device)
                        sync = contextlib.nullcontext() if micro == accum - 1 else _no_sync(model)
                        with sync:
                            with autocast(precision, device):
                                out = model(batch)
                            loss = out["loss"]
                            loss_value = float(all_reduce_mean(loss.detach().float()))
                            check_finite(
                                loss_value,
                                step,
                                on_fail=lambda: ckpt_manager.save_named(state(gather_rng=False), "nonfinite"),
                                components={k: v for k, v in out.items() if k != "loss"},
                            )
                            scaler.scale(loss / accum).backward()
                        values = torch.stack([v.detach().float() for v in out.values()]).tolist()  # one sync
                        for k, v in zip(out, values):
                            stats[k] = stats.get(k, 0.0) + v / accum
                    scaler.unscale_(optimizer)
                    grad_norm = clip_grad(params, cfg.optim.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    meter.update(batch_size * accum * info.world_size)
                    window_steps += 1
                    for k, v in stats.items():
                        window[k] = window.get(k, 0.0) + v
                    bar.update(1)
                    bar.set_postfix(meter.postfix(step, plan.total_steps, loss=stats["loss"], lr=lr))

                    if step % cfg.run.log_every == 0 or step == stop_at:
                        broken = monitor.skipped
                        metrics = {k: v / window_steps for k, v in window.items()}
                        metrics.update(
                            lr=lr,
                            grad_norm=float(grad_norm),
                            epoch=step / plan.steps_per_epoch,
                            images_per_sec=meter.images_per_sec,
                            broken_images=broken,
                        )
                        logger.log(step, metrics)
                        window, window_steps = {}, 0
                    if step % cfg.run.ckpt_every_steps == 0 or step == stop_at:
                        saved = ckpt_manager.save(state(), step)  # None on ranks other than 0
                        last_path = saved or ckpt_manager.path_for(step)
                del batches, loader
    finally:
        bar.close()
        logger.close()

    broken = monitor.skipped
    if broken:
        _log.warning(
            "%d broken images were skipped and replaced (examples: %s)", broken, monitor.examples[:3]
        )
    encoder_path = None
    if step >= plan.total_steps:
        if info.is_main:
            encoder_path = export_encoder(unwrap_model(model).encoder, run_dir / "encoder", meta)
            _log.info("exported the encoder to %s", encoder_path)
        else:
            encoder_path = run_dir / "encoder.safetensors"
    else:
        _log.info(
            "stopped at update %d of %d (schedule.stop_at_step); resume with --resume auto",
            step,
            plan.total_steps,
        )
    barrier()
    return {
        "checkpoint": Path(last_path) if last_path else None,
        "encoder": Path(encoder_path) if encoder_path else None,
        "final_loss": loss_value,
        "step": step,
        "run_dir": run_dir,
        "broken_images": broken,
    }


def _no_sync(model: torch.nn.Module):
    """DDP's no_sync for accumulation micro-batches (a no-op context without DDP)."""
    return model.no_sync() if hasattr(model, "no_sync") else contextlib.nullcontext()
