"""The pretraining loop: one process or many (torchrun), exact resume, checkpoints, encoder export.

`train(cfg)` builds everything from a `PretrainConfig`, trains, and returns the paths of the last
checkpoint and of the exported encoder. Steps are optimizer updates; with `accum_iter` > 1 each update
sums the gradients of that many micro-batches. A checkpoint is written every `run.ckpt_every_steps`
updates and at the end; `run.resume="auto"` continues from the newest one bit for bit (model,
optimizer, scaler, RNG, data position; the data order and augmentations depend only on
(seed, epoch, index)).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from engine.config import ConfigError
from engine.optim import build_adamw
from engine.plots import plot_metric_curves, read_metrics
from engine.sampler import ResumableSampler
from engine.schedules import schedule_from_config
from engine.trainer import RunContext, Task, TrainSetup, fit
from ssl_backbones import export_encoder, load_encoder_weights

from .config import SMALL_DATASET_IMAGES, WARMUP_FRACTION, PretrainConfig, ProbeConfig, resolve_epochs
from .data import (
    UnlabeledImages,
    build_transform,
    collate,
    list_images,
    normalize_images,
    resolve_root,
    select_subset,
)
from .methods import build_encoder, build_masking, build_method, needs_tokenizer
from .multicrop import MultiCropTransform
from .tokenizers import PatchTokenizer, build_tokenizer, sample_patches

__all__ = ["train", "PretrainTask", "EncoderMonitor", "build_dataset", "build_tokenizer_for_run", "Plan", "make_plan"]

# A health check of the encoder while it pretrains (e.g. `target_ssl.probe_monitor.ProbeMonitor`):
# (encoder, device) -> flat metrics. It comes from the tools layer, which may import the transfer
# code that scores it; this package must not.
EncoderMonitor = Callable[[torch.nn.Module, torch.device], dict[str, float]]

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
    if cfg.optim.warmup_steps > 0:  # given in steps (an explicit --set wins over the epochs rule)
        warmup_steps = min(cfg.optim.warmup_steps, total_steps - 1)
    else:
        default = epochs * WARMUP_FRACTION.get(cfg.model.method, 1 / 30)
        warmup_epochs = default if s.warmup_epochs is None else s.warmup_epochs
        warmup_steps = min(round(warmup_epochs * steps_per_epoch), total_steps - 1)
    total_batch = s.batch_size * world_size * s.accum_iter
    lr = cfg.optim.lr if s.blr is None else s.blr * total_batch / 256
    return Plan(epochs, steps_per_epoch, total_steps, warmup_steps, total_batch, lr)


def augment_preset(cfg: PretrainConfig, num_images: int) -> str:
    """The augmentation recipe of `data.augment="auto"`: ADE20k's crop rule on ADE20k; the small-data
    recipe (strong colour augmentation, which also selects uniform 75% masking) below
    SMALL_DATASET_IMAGES images, as the paper does for Stanford Cars, ClipArt, Painting and Sketch
    (8k-53k images; Food-101 at 76k and ADE20k keep the standard one); else the method's own."""
    if cfg.data.augment != "auto":
        return cfg.data.augment
    if cfg.data.name == "ade20k":
        return "ade20k"
    if num_images < SMALL_DATASET_IMAGES and cfg.model.method in ("splitmask", "beit", "mae"):
        return "small"
    return "mae" if cfg.model.method == "mae" else "default"


def build_dataset(cfg: PretrainConfig, seed_offset: int = 0, with_masks: bool = True) -> UnlabeledImages:
    """The training images (the configured subset) with the run's augmentation (and per-image masks)."""
    d = cfg.data
    files = list_images(d.name, d.root)
    if d.file_list is not None or d.fraction is not None:
        files = select_subset(files, resolve_root(d.name, d.root), d.file_list, d.fraction, d.subset_seed)
    if d.max_images is not None:
        files = files[: d.max_images]
    preset = augment_preset(cfg, len(files))
    grid = (cfg.data.img_size // cfg.model.patch_size,) * 2
    masking = build_masking(cfg.model.method, cfg.mask, grid, preset == "small") if with_masks else None
    return UnlabeledImages(
        files,
        _multicrop(cfg) if cfg.model.method == "dino" else build_transform(preset, cfg.data.img_size),
        masking,
        seed=cfg.run.seed + seed_offset,
        max_retries=cfg.data.max_retries,
    )


def _multicrop(cfg: PretrainConfig) -> MultiCropTransform:
    k, p = cfg.dino, cfg.model.patch_size
    if k.local_crop_size % p or cfg.data.img_size % p:
        raise ConfigError(
            f"DINO crops must be multiples of the patch size {p}: data.img_size={cfg.data.img_size}, "
            f"dino.local_crop_size={k.local_crop_size}; e.g. --set dino.local_crop_size={max(p, round(k.local_crop_size / p) * p)}"
        )
    return MultiCropTransform(
        cfg.data.img_size,
        tuple(k.global_crop_scale),
        k.local_crops_number,
        k.local_crop_size,
        tuple(k.local_crop_scale),
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
        images = (normalize_images(b)["images"] for b in loader)
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
    """The batch on the device, its uint8 images normalised there (the loader ships uint8)."""
    return normalize_images({
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
        if k not in ("skipped", "skipped_files")
    })  # fmt: skip


def _resolve(cfg: PretrainConfig, plan: Plan, precision: str) -> PretrainConfig:
    """`cfg` with the derived numbers filled in (what config.json records and resume compares)."""
    return dataclasses.replace(
        cfg,
        schedule=dataclasses.replace(cfg.schedule, epochs=plan.epochs),
        optim=dataclasses.replace(cfg.optim, lr=plan.lr, warmup_steps=plan.warmup_steps),
        run=dataclasses.replace(cfg.run, precision=precision),
    )


class PretrainTask(Task):
    """Self-supervised pretraining (SplitMask, BEiT, MAE, DINO); exports the encoder at the end
    (`method.encoder`: DINO's is the teacher's backbone)."""

    name = "pretrain"
    # What a resumed run may change: its length (and what is derived from it) and the loader processes.
    # The probe only reads the encoder, so its settings may change too.
    run_length_keys = ("schedule.epochs", "schedule.stop_at_step", "optim.warmup_steps", "data.num_workers",
                       *(f"probe.{f.name}" for f in dataclasses.fields(ProbeConfig)))

    def __init__(self, cfg: PretrainConfig, monitor: EncoderMonitor | None = None) -> None:
        self.cfg = cfg
        self.monitor = monitor
        self.encoder_meta: dict[str, Any] = {}

    def _tokenizer(self, ctx: RunContext) -> PatchTokenizer | None:
        if not needs_tokenizer(self.cfg.model):
            return None
        model_state = (ctx.resume_state or {}).get("model", {})
        if "tokenizer.vocab" in model_state:  # the run's own vocabulary: targets stay the same
            t = self.cfg.tokenizer
            return PatchTokenizer(model_state["tokenizer.vocab"], t.patch_size, t.downsample, t.kind)
        return build_tokenizer_for_run(self.cfg, ctx.device)

    def build(self, ctx: RunContext) -> TrainSetup:
        dataset = build_dataset(self.cfg)
        plan = make_plan(self.cfg, len(dataset), ctx.info.world_size)
        cfg = self.cfg = _resolve(self.cfg, plan, ctx.precision)
        _log.info(
            "pretraining %s / %s on %s: %d images, %d epochs x %d steps = %d updates, batch %d, lr %.3g, warmup %d",
            cfg.model.method, cfg.model.arch, cfg.data.name, len(dataset), plan.epochs, plan.steps_per_epoch,
            plan.total_steps, plan.total_batch, plan.lr, plan.warmup_steps,
        )  # fmt: skip
        tokenizer = self._tokenizer(ctx)
        encoder = build_encoder(cfg.model, cfg.data.img_size)
        method = build_method(cfg.model, encoder, tokenizer, cfg.dino, cfg.optim.weight_decay).to(ctx.device)
        if tokenizer is not None and ctx.info.distributed:
            # Identical targets on every rank even if k-means ran non-deterministically on the GPUs.
            torch.distributed.broadcast(method.tokenizer.vocab, src=0)
        if cfg.model.init and ctx.resume_state is None:
            load_encoder_weights(method.encoder, cfg.model.init, allow_pickle=cfg.run.allow_pickle)
            if hasattr(method, "on_encoder_loaded"):  # DINO: the student starts from it too
                method.on_encoder_loaded()
        self.encoder_meta = _encoder_meta(cfg, plan.epochs, encoder)
        self.plan = plan
        self.optimizer = build_adamw(
            method, plan.lr, cfg.optim.weight_decay, tuple(cfg.optim.betas), eps=cfg.optim.eps
        )
        s = cfg.schedule
        return TrainSetup(
            config=cfg,
            model=method,
            optimizer=self.optimizer,
            dataset=dataset,
            sampler=ResumableSampler(len(dataset), shuffle=True, seed=cfg.run.seed, drop_last=True),
            collate_fn=collate,
            batch_size=s.batch_size,
            total_steps=plan.total_steps,
            steps_per_epoch=plan.steps_per_epoch,
            schedule=schedule_from_config(cfg.optim, plan.total_steps),
            base_lr=plan.lr,
            accum_iter=s.accum_iter,
            num_workers=cfg.data.num_workers,
            clip_grad=cfg.optim.clip_grad,
            max_skipped_fraction=cfg.data.max_broken_fraction,
            min_seen=cfg.data.broken_check_after,
            stop_at_step=s.stop_at_step,
            # The tokenizer vocabulary is identical on every rank: no buffer broadcast each step.
            ddp_kwargs={"broadcast_buffers": False},
        )

    def step(self, model: torch.nn.Module, batch: dict, ctx: RunContext) -> dict[str, torch.Tensor]:
        return model(_to_device(batch, ctx.device))

    # Per-update hooks of methods that have them (DINO: frozen prototypes, weight-decay schedule,
    # EMA teacher); SplitMask, BEiT and MAE have none.
    def before_update(self, model: torch.nn.Module, step: int) -> None:
        if hasattr(model, "before_update"):
            model.before_update(step, self.plan.total_steps, self.plan.steps_per_epoch, self.optimizer)

    def after_update(self, model: torch.nn.Module, step: int) -> None:
        if hasattr(model, "after_update"):
            model.after_update(step, self.plan.total_steps, self.plan.steps_per_epoch)

    def evaluate_at(self, step: int) -> bool:
        every = self.cfg.probe.every_epochs * self.plan.steps_per_epoch
        return self.monitor is not None and every > 0 and step % every == 0

    def evaluate(self, model: torch.nn.Module, ctx: RunContext, tag: str) -> dict[str, Any] | None:
        if self.monitor is None or not self.cfg.probe.every_epochs:
            return None
        return self.monitor(model.encoder, ctx.device)

    def meta(self) -> dict[str, Any]:
        return self.encoder_meta

    def on_end(self, model: torch.nn.Module, ctx: RunContext, finished: bool) -> dict[str, Any]:
        path = ctx.run_dir / "encoder.safetensors"
        if self.monitor is not None and self.cfg.probe.every_epochs and ctx.info.is_main:
            _plot_probe_curve(ctx.run_dir)
        if not finished:
            return {"encoder": None}
        if ctx.info.is_main:
            path = export_encoder(model.encoder, ctx.run_dir / "encoder", self.encoder_meta)
            _log.info("exported the encoder to %s", path)
        return {"encoder": Path(path)}


def _plot_probe_curve(run_dir: Path) -> Path | None:
    """probe_curve.png: each tap's probe score over the run, the encoder's against random init's."""
    records = read_metrics(run_dir / "metrics.jsonl")
    keys = sorted({k for r in records for k in r if k.startswith("val/probe/") and k.split("/")[2] in
                   ("miou", "linear_acc")}, key=lambda k: (k.split("/")[2], int(k.rsplit("block", 1)[1])))
    if not keys:
        return None
    curves = {}
    for key in keys:
        metric, tap = key.split("/")[2], key.rsplit("/", 1)[1]
        curves[f"{tap} pretraining"] = key
        curves[f"{tap} random init"] = key.replace("val/probe/", "val/probe_random/")
    return plot_metric_curves(run_dir / "metrics.jsonl", curves, run_dir / "probe_curve.png",
                              title=f"frozen-feature probe ({metric}, held-out images) while pretraining",
                              ylabel=metric)


def train(cfg: PretrainConfig, monitor: EncoderMonitor | None = None) -> dict[str, Any]:
    """Pretrain as configured. Returns the trainer's result (`engine.trainer`) plus `"encoder"`
    (None when the run stopped early at `schedule.stop_at_step`). `monitor` runs every
    `cfg.probe.every_epochs` epochs and at the end; its metrics are logged as `val/*`."""
    if cfg.probe.every_epochs and monitor is None:
        raise ConfigError(
            "probe.every_epochs is set but no probe was given: the probe needs the transfer code, so run "
            "`target-ssl-pretrain` (or `python -m target_ssl.pretrain` under torchrun) instead of pretrain.cli"
        )
    result = fit(PretrainTask(cfg, monitor), cfg)
    result["checkpoint"] = Path(result["checkpoint"])
    return result
