"""Classification fine-tuning on the shared engine (Table 9's recipe), and its evaluation alone.

    train(cfg) -> {"top1", "top5", "mean_class_acc", "per_class_acc", "best_top1", "encoder", ...}
    evaluate(cfg, checkpoint) -> the same metrics for a fine-tuned classifier checkpoint

One process per device (plain `python`, or `torchrun` for DDP); `solver.batch_size` is the batch
of one update over all processes and accumulation micro-batches. At the end the fine-tuned
encoder is exported as `encoder.safetensors` / `encoder.json` (the pretraining export's contract),
so a supervised stage can feed Mask R-CNN / UperNet (MAWS: MAE -> supervised -> dense transfer).

Exact resume: the trainer restores model, optimizer, data position and RNG; the sample order is a
function of (seed, epoch), each sample's augmentation of (seed, epoch, index) and each Mixup /
CutMix draw of (seed, rank, micro-batch count), which the checkpoint's task state holds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch.utils.data import DataLoader, Subset

from engine.checkpoint import load_checkpoint
from engine.config import ConfigError
from engine.distributed import DistInfo, all_reduce_sum, get_rank, get_world_size
from engine.optim import build_adamw
from engine.precision import autocast
from engine.sampler import ResumableSampler
from engine.schedules import schedule_from_config
from engine.trainer import RunContext, Task, TrainSetup, fit, open_run
from ssl_backbones import export_encoder, load_encoder_weights

from .augment import RepeatAugSampler, SeededMixup, eval_transform, train_transform
from .config import DATASETS, ClsConfig
from .data import ClsDataset, check_same_classes, collate, list_split
from .model import ViTClassifier, build_classifier
from .probes import hit_counts, metrics_from_counts

_log = logging.getLogger("target_ssl")

__all__ = ["ClsTask", "train", "evaluate", "build_model", "evaluate_classifier", "read_splits"]


def read_splits(cfg: ClsConfig) -> tuple[list, list, list[str]]:
    """Training and validation (path, class id) pairs and the class names; the splits must share classes."""
    train_samples, train_classes = list_split(cfg.data.root, "train")
    val_samples, val_classes = list_split(cfg.data.root, "val")
    check_same_classes(cfg.data.root, train_classes, val_classes)
    preset = DATASETS.get(cfg.data.dataset or "")
    if preset is not None and (len(train_classes), len(train_samples)) != (preset.num_classes, preset.num_train):
        _log.warning("%s: %d classes, %d training images; the %s release has %d and %d", cfg.data.root,
                     len(train_classes), len(train_samples), cfg.data.dataset, preset.num_classes, preset.num_train)
    return train_samples, val_samples, train_classes


def build_model(cfg: ClsConfig, num_classes: int) -> ViTClassifier:
    """The classifier of `cfg.model`, encoder initialised from `cfg.model.weights` (None: random)."""
    m = cfg.model
    overrides = {k: v for k, v in (("embed_dim", m.embed_dim), ("depth", m.depth), ("num_heads", m.num_heads)) if v is not None}
    model = build_classifier(m.arch, num_classes, cfg.data.img_size, pool=m.pool, drop_path=m.drop_path,
                             head_init_std=m.head_init_std, layer_scale=m.layer_scale, **overrides)
    if m.weights:
        load_encoder_weights(model.encoder, m.weights, allow_pickle=cfg.run.allow_pickle)
    return model


def _per_rank_batch(cfg: ClsConfig, info: DistInfo) -> int:
    s = cfg.solver
    parts = info.world_size * s.accum_iter
    if s.batch_size % parts:
        raise ConfigError(
            f"solver.batch_size={s.batch_size} is not divisible by {info.world_size} processes x "
            f"{s.accum_iter} accumulation steps; choose a multiple"
        )
    per_rank = s.batch_size // parts
    if (cfg.aug.mixup > 0 or cfg.aug.cutmix > 0) and per_rank % 2:
        raise ConfigError(f"{per_rank} images per process and micro-batch: mixup / cutmix need an even number")
    return per_rank


@torch.no_grad()
def evaluate_classifier(model: nn.Module, dataset: ClsDataset, batch_size: int, device: torch.device,
                        precision: str, num_workers: int, num_classes: int) -> dict:
    """top-1 / top-5 / per-class accuracy of `model` on `dataset`, each process scoring a strided
    shard, the counts summed over processes. Unreadable images are left out and counted."""
    model.eval()
    shard = Subset(dataset, range(get_rank(), len(dataset), get_world_size()))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    counts = torch.zeros(2 * num_classes + 2, dtype=torch.float64, device=device)
    skipped = torch.zeros((), dtype=torch.float64, device=device)
    for batch in loader:
        keep = batch["label"] >= 0
        skipped += int((~keep).sum())
        with autocast(precision, device):
            logits = model(batch["image"][keep].to(device, non_blocking=True))
        top = logits.float().topk(min(5, num_classes), dim=1).indices
        counts += hit_counts(top, batch["label"][keep].to(device), num_classes)
    metrics = metrics_from_counts(all_reduce_sum(counts).cpu(), num_classes)
    metrics["skipped_images"] = int(all_reduce_sum(skipped).item())
    return metrics


def _write_results(path: Path, metrics: dict, names: list[str]) -> None:
    table = [{"name": n, "acc": a} for n, a in zip(names, metrics["per_class_acc"])]
    summary = {k: v for k, v in metrics.items() if k != "per_class_acc"}
    path.write_text(json.dumps({**summary, "classes": table}, indent=2) + "\n")


class ClsTask(Task):
    """Full fine-tuning of a ViT classifier; evaluates every `eval.every_epochs` and at the end."""

    name = "classification"
    best_metric = "top1"
    run_length_keys = ("solver.epochs", "eval.every_epochs", "data.num_workers")

    def __init__(self, cfg: ClsConfig) -> None:
        self.cfg = cfg
        self.mixup: SeededMixup | None = None

    def build(self, ctx: RunContext) -> TrainSetup:
        cfg = self.cfg
        train_samples, val_samples, self.names = read_splits(cfg)
        k = len(self.names)
        per_rank = _per_rank_batch(cfg, ctx.info)
        train_ds = ClsDataset(train_samples, train_transform(cfg.aug, cfg.data.img_size), train=True, seed=cfg.run.seed)
        self.val_ds = _val_dataset(cfg, val_samples)
        if cfg.aug.repeated_aug:
            sampler: ResumableSampler = RepeatAugSampler(len(train_ds), cfg.aug.num_repeats, seed=cfg.run.seed)
        else:
            sampler = ResumableSampler(len(train_ds), shuffle=True, seed=cfg.run.seed)
        self.steps_per_epoch = sampler.num_samples // (per_rank * cfg.solver.accum_iter)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"{len(train_ds)} training images cannot fill one update of {cfg.solver.batch_size}; "
                              "lower solver.batch_size")
        total = cfg.solver.epochs * self.steps_per_epoch
        optim = dataclasses.replace(cfg.optim, warmup_steps=cfg.solver.warmup_epochs * self.steps_per_epoch)
        self.cfg = cfg = dataclasses.replace(cfg, optim=optim)  # the resolved config is what is saved
        ref = cfg.solver.lr_reference_batch
        lr = cfg.optim.lr * cfg.solver.batch_size / ref if ref else cfg.optim.lr
        model = build_model(cfg, k)
        if not cfg.model.weights:
            _log.info("encoder %s: random initialisation (model.weights is None)", cfg.model.arch)
        model.to(ctx.device)
        optimizer = build_adamw(model, lr, optim.weight_decay, optim.betas, optim.layer_decay,
                                num_layers=model.encoder.depth, prefix=ViTClassifier.ENCODER_PREFIX, eps=optim.eps)
        if cfg.aug.mixup > 0 or cfg.aug.cutmix > 0:
            self.mixup = SeededMixup(cfg.aug, k, cfg.run.seed, ctx.info.rank)
        return TrainSetup(
            config=cfg, model=model, optimizer=optimizer, dataset=train_ds, sampler=sampler, collate_fn=collate,
            batch_size=per_rank, total_steps=total, steps_per_epoch=self.steps_per_epoch,
            schedule=schedule_from_config(optim, total), base_lr=lr, accum_iter=cfg.solver.accum_iter,
            num_workers=cfg.data.num_workers, clip_grad=optim.clip_grad,
            max_skipped_fraction=cfg.data.max_skipped_fraction, min_seen=min(len(train_ds), 200),
        )  # fmt: skip

    def step(self, model: nn.Module, batch: dict, ctx: RunContext) -> dict[str, torch.Tensor]:
        images = batch["image"].to(ctx.device, non_blocking=True)
        labels = batch["label"].to(ctx.device, non_blocking=True)
        if self.mixup is not None:
            images, targets = self.mixup(images, labels)
            loss = SoftTargetCrossEntropy()(model(images).float(), targets)
        else:
            loss = F.cross_entropy(model(images).float(), labels, label_smoothing=self.cfg.aug.label_smoothing)
        return {"loss": loss}

    def evaluate_at(self, step: int) -> bool:
        every = self.cfg.eval.every_epochs * self.steps_per_epoch
        return bool(every) and step % every == 0

    def evaluate(self, model: nn.Module, ctx: RunContext, tag: str) -> dict:
        cfg = self.cfg
        m = evaluate_classifier(model, self.val_ds, cfg.eval.batch_size, ctx.device, ctx.precision,
                                cfg.data.num_workers, len(self.names))
        if ctx.info.is_main:
            _write_results(ctx.run_dir / "eval_results.json", m, self.names)
        _log.info("%s: top-1 %.2f  top-5 %.2f  mean class acc %.2f", tag, m["top1"], m["top5"], m["mean_class_acc"])
        return {**m, "class_names": self.names}

    def state_dict(self) -> dict:
        return {"mixup_calls": self.mixup.calls} if self.mixup is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.mixup is not None:
            self.mixup.calls = int(state.get("mixup_calls", 0))

    def meta(self) -> dict:
        return {"task": "classification", "arch": self.cfg.model.arch, "dataset": self.cfg.data.dataset}

    def on_end(self, model: nn.Module, ctx: RunContext, finished: bool) -> dict:
        """Export the fine-tuned encoder (the dense tools' `--weights` reads it)."""
        if not finished:
            return {}
        path = ctx.run_dir / "encoder.safetensors"
        if ctx.info.is_main:
            meta = {"method": "supervised_classification", "dataset": self.cfg.data.dataset or self.cfg.data.root,
                    "epochs": self.cfg.solver.epochs, "init": self.cfg.model.weights or "random"}
            export_encoder(model.encoder, path, meta)
        return {"encoder": str(path)}


def _val_dataset(cfg: ClsConfig, samples: list) -> ClsDataset:
    samples = samples[: cfg.eval.max_images] if cfg.eval.max_images else samples
    return ClsDataset(samples, eval_transform(cfg.aug, cfg.data.img_size), train=False)


def train(cfg: ClsConfig) -> dict:
    """Fine-tune per `cfg`; returns the trainer's result (the final metrics, `best_top1`, `encoder`, ...).

    Writes into `cfg.run.output_dir`: config.json / config.py, log.txt, metrics.jsonl, tb/,
    checkpoints, best.pth (highest top-1), eval_results.json (per-class accuracy),
    final_metrics.json, encoder.safetensors / encoder.json.
    """
    return fit(ClsTask(cfg), cfg)


def evaluate(cfg: ClsConfig, checkpoint: str | Path | None = None) -> dict:
    """Evaluate a fine-tuned classifier checkpoint (`checkpoint` or `cfg.eval.checkpoint`) on val/.

    Writes `eval_results.json` (per-class table) and `eval_metrics.json` into `run.output_dir`.
    """
    checkpoint = checkpoint or cfg.eval.checkpoint
    if not checkpoint:
        raise ConfigError("--eval-only needs a checkpoint: pass --weights CKPT or --set eval.checkpoint=CKPT")
    ctx = open_run(cfg.run)
    _, val_samples, names = read_splits(cfg)
    model = build_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None)), len(names))
    state = load_checkpoint(checkpoint, allow_pickle=cfg.run.allow_pickle)
    state = state.get("model", state)
    if "head.weight" not in state:
        raise ConfigError(f"{checkpoint} holds no classifier (no head.weight): evaluation needs a checkpoint written "
                          "by train_cls (best.pth / last.pth); to start training from an encoder use --weights alone")
    state["encoder.pos_embed"] = model.encoder.pos_embed.detach().clone()  # sin-cos: a function of the grid
    model.load_state_dict(state)
    model.to(ctx.device)
    m = evaluate_classifier(model, _val_dataset(cfg, val_samples), cfg.eval.batch_size, ctx.device, ctx.precision,
                            cfg.data.num_workers, len(names))
    summary = {**{k: v for k, v in m.items() if k != "per_class_acc"}, "checkpoint": str(checkpoint)}
    if ctx.info.is_main:
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        _write_results(ctx.run_dir / "eval_results.json", m, names)
        (ctx.run_dir / "eval_metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    _log.info("top-1 %.2f  top-5 %.2f  mean class acc %.2f", m["top1"], m["top5"], m["mean_class_acc"])
    return summary
