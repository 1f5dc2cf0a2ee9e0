"""UperNet training loop (iteration-based, as the reference recipe) on the shared engine.

    train(cfg) -> {"mIoU", "mAcc", "aAcc", "best_mIoU", "best_step", "step", "checkpoint", ...}
    evaluate(cfg, checkpoint) -> the same metrics for a trained UperNet checkpoint

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
from pathlib import Path

import torch
import torch.nn as nn

from engine.checkpoint import load_checkpoint
from engine.config import ConfigError
from engine.distributed import DistInfo
from engine.optim import build_adamw
from engine.sampler import ResumableSampler
from engine.schedules import schedule_from_config
from engine.trainer import RunContext, Task, TrainSetup, fit, open_run
from ssl_backbones import load_encoder_weights

from .config import SegConfig
from .data import SegDataset, collate_train, read_class_names, single_thread_cv2
from .evaluation import evaluate as evaluate_model
from .model import UperNet, build_upernet
from .transforms import EvalTransform, TrainTransform

_log = logging.getLogger("target_ssl")


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
        rel_pos=m.rel_pos,  # issue 16: BEiT relative position bias
        **overrides,
    )
    if m.weights:
        load_encoder_weights(model.backbone.encoder, m.weights, allow_pickle=cfg.run.allow_pickle)
    return model


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


def evaluate(cfg: SegConfig, checkpoint: str | Path | None = None) -> dict:
    """Evaluate a trained UperNet checkpoint (`checkpoint` or `cfg.eval.checkpoint`) on the validation split.

    Writes `eval_results.json` (per-class table) and `eval_metrics.json` into `run.output_dir`.
    """
    checkpoint = checkpoint or cfg.eval.checkpoint
    if not checkpoint:
        raise ConfigError("--eval-only needs a checkpoint: pass --weights CKPT or --set eval.checkpoint=CKPT")
    ctx = open_run(cfg.run)
    info, run_dir, precision = ctx.info, ctx.run_dir, ctx.precision
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
    val_ds = _val_dataset(cfg, k)
    metrics = evaluate_model(model, val_ds, cfg.eval, info.device, precision, cfg.data.num_workers, names,
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


class SegTask(Task):
    """UperNet fine-tuning, iteration-based as the reference recipe; evaluates every `eval.every`."""

    name = "segmentation"
    best_metric = "mIoU"
    run_length_keys = ("solver.iterations", "eval.every", "data.num_workers")

    def __init__(self, cfg: SegConfig) -> None:
        self.cfg = cfg

    def build(self, ctx: RunContext) -> TrainSetup:
        cfg, device = self.cfg, ctx.device
        total = cfg.solver.iterations
        if cfg.optim.warmup_steps >= total:
            raise ConfigError(
                f"optim.warmup_steps={cfg.optim.warmup_steps} must be smaller than solver.iterations={total}; "
                "shorten the warmup too (e.g. --set optim.warmup_steps=...)"
            )
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
        self.names, num_classes = resolve_classes(cfg)
        sync_bn = ctx.info.distributed and device.type == "cuda"
        per_rank_batch = _check_batch(cfg, ctx.info, sync_bn)
        train_ds = _train_dataset(cfg, num_classes)
        self.val_ds = _val_dataset(cfg, num_classes)
        sampler = ResumableSampler(len(train_ds), shuffle=True, seed=cfg.run.seed)
        steps_per_epoch = sampler.num_samples // per_rank_batch
        if steps_per_epoch == 0:
            raise ConfigError(
                f"{len(train_ds)} training images cannot fill one batch of {per_rank_batch} per process; "
                "lower solver.batch_size"
            )
        model = build_model(cfg, num_classes)
        if not cfg.model.weights:  # said here, not in the builder, which also serves evaluation and pictures
            _log.info("encoder %s: random initialisation (model.weights is None)", cfg.model.arch)
        if sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(device)
        optimizer = build_adamw(
            model, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.layer_decay,
            num_layers=model.backbone.encoder.depth, prefix=UperNet.ENCODER_PREFIX, eps=cfg.optim.eps,
        )
        if cfg.data.num_workers:
            single_thread_cv2()  # before the first fork (see its docstring)
        return TrainSetup(
            config=cfg, model=model, optimizer=optimizer, dataset=train_ds, sampler=sampler,
            collate_fn=collate_train, batch_size=per_rank_batch, total_steps=total,
            steps_per_epoch=steps_per_epoch, schedule=schedule_from_config(cfg.optim, total),
            base_lr=cfg.optim.lr, num_workers=cfg.data.num_workers, worker_init_fn=single_thread_cv2,
            clip_grad=cfg.optim.clip_grad, max_skipped_fraction=cfg.data.max_skipped_fraction,
            min_seen=min(len(train_ds), 200),
        )  # fmt: skip

    def step(self, model: nn.Module, batch: dict, ctx: RunContext) -> dict[str, torch.Tensor]:
        images = batch["image"].to(ctx.device, non_blocking=True)
        labels = batch["label"].to(ctx.device, non_blocking=True)
        return model(images, labels)

    def evaluate_at(self, step: int) -> bool:
        return bool(self.cfg.eval.every) and step % self.cfg.eval.every == 0

    def evaluate(self, model: nn.Module, ctx: RunContext, tag: str) -> dict:
        m = evaluate_model(model, self.val_ds, self.cfg.eval, ctx.device, ctx.precision, self.cfg.data.num_workers,
                           self.names, ctx.run_dir / "eval_results.json")
        _log.info("%s: mIoU %.2f  mAcc %.2f  aAcc %.2f", tag, m["mIoU"], m["mAcc"], m["aAcc"])
        return {**m, "class_names": self.names}

    def meta(self) -> dict:
        return {"task": "segmentation", "arch": self.cfg.model.arch}


def _train_dataset(cfg: SegConfig, num_classes: int) -> SegDataset:
    d = cfg.data
    transform = TrainTransform(
        crop_size=tuple(d.crop_size), scale=tuple(d.scale), ratio_range=tuple(d.ratio_range),
        cat_max_ratio=d.cat_max_ratio, flip_prob=d.flip_prob, photometric=d.photometric,
    )  # fmt: skip
    return SegDataset(d.root, "train", num_classes, transform, reduce_zero_label=d.reduce_zero_label, seed=cfg.run.seed)


def train(cfg: SegConfig) -> dict:
    """Train UperNet per `cfg`; evaluate periodically and at the end. Returns the trainer's result
    (`engine.trainer`: the final metrics, `best_mIoU`, `step`, `checkpoint`, ...).

    Writes into `cfg.run.output_dir`: config.json / config.py, log.txt, metrics.jsonl, TensorBoard
    events (tb/), checkpoint_*.pth + last.pth, best.pth (highest mIoU), eval_results.json (per-class
    IoU of the last evaluation), final_metrics.json.
    """
    return fit(SegTask(cfg), cfg)
