"""Typed configuration of an UperNet transfer run (ADE20k or any dataset in its layout).

A config file in `seg_configs/` builds a `SegConfig` and assigns it to a module-level `config`;
files compose by importing each other and using `dataclasses.replace`. Command-line overrides
(`--set optim.lr=2e-4 data.root=/data/ADEChallengeData2016`) are applied by
`engine.config.apply_overrides`. Steps are optimizer iterations throughout (the reference recipe
is iteration-based: 160k iterations, 1500 warmup iterations, evaluation every 16k).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from engine.config import ConfigError, OptimConfig, RunConfig

__all__ = ["ModelConfig", "DataConfig", "SolverConfig", "EvalConfig", "SegConfig", "OptimConfig", "RunConfig"]


@dataclasses.dataclass
class ModelConfig:
    """ViT encoder -> max-pool / deconvolution pyramid -> UPerHead (+ auxiliary FCN head).

    Attributes:
        arch: encoder size (`ssl_backbones.vit.ARCHS`: vit_tiny / vit_small / vit_base / ...).
        weights: encoder initialisation: any checkpoint layout `ssl_backbones.weights_io` reads
            (our pretraining checkpoints, exported encoders, MAE / BEiT / DeiT / timm); None = random.
        drop_path: stochastic depth rate of the encoder (linearly increasing over blocks).
        layer_scale: layer-scale init of the encoder blocks (0.1 for BEiT checkpoints, which are
            trained with it); None = no layer scale (SplitMask, MAE, DeiT, random init).
        out_indices: tapped blocks; None = [d/3, d/2, 2d/3, d] - 1 (3, 5, 7, 11 for 12 blocks).
        channels: UPerHead width (768 for ViT-B in BEiT's recipe, 512 in mmseg's ViT-S / DeiT-S).
        aux_channels: width of the auxiliary FCN head on level 2 (0 disables it).
        aux_weight: weight of the auxiliary loss (0.4).
        dropout: Dropout2d before both classifiers (0.1).
        embed_dim, depth, num_heads: override the named size (tests and small experiments).
        grad_checkpointing: recompute encoder blocks in backward (saves memory for ViT-L).
        rel_pos: "beit" gives every block BEiT's relative position bias table, made for the crop's
            grid; BEiT checkpoints' tables are loaded and resampled to it on BEiT's geometric
            progression (`ssl_backbones.beit_rel_pos`); "none" (default) drops them.
    """

    arch: str = "vit_base"
    weights: str | None = None
    drop_path: float = 0.1
    layer_scale: float | None = None
    out_indices: tuple[int, ...] | None = None
    channels: int = 768
    aux_channels: int = 256
    aux_weight: float = 0.4
    dropout: float = 0.1
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    grad_checkpointing: bool = False
    rel_pos: Literal["none", "beit"] = "none"

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"model.drop_path must be in [0, 1), got {self.drop_path}")
        if self.out_indices is not None and len(self.out_indices) != 4:
            raise ConfigError(f"model.out_indices needs 4 block indices, got {self.out_indices}")
        if self.channels <= 0 or self.aux_channels < 0:
            raise ConfigError(f"model.channels must be > 0 and aux_channels >= 0, got {self.channels}, {self.aux_channels}")


@dataclasses.dataclass
class DataConfig:
    """Dataset location, classes and the training augmentation (mmseg's ADE20k pipeline).

    Layout under `root` (ADE20k's release, `ADEChallengeData2016/`):
        images/{training,validation}/*.jpg, annotations/{training,validation}/*.png (same stems),
        and optionally classes.txt (one name per line) or objectInfo150.txt (ADE20k's table).

    Attributes:
        root: the dataset folder (the one holding `images/` and `annotations/`).
        classes: class names; None = read `classes.txt` / `objectInfo150.txt` under `root`.
        num_classes: K; None = the number of class names. Labels after `reduce_zero_label` must be
            in [0, K) or 255.
        reduce_zero_label: ADE20k's convention: 0 = "other" -> 255 (ignored), x -> x - 1.
        crop_size: training crop (h, w), padded with the ignore label when the image is smaller.
        scale: keep-ratio resize target (long, short) before cropping and at test time.
        ratio_range: training rescale factor range applied to `scale`.
        cat_max_ratio: reject crops where one class covers more than this share of labelled
            pixels (up to 10 tries); 1.0 disables it.
        flip_prob, photometric: horizontal flip probability; mmseg's photometric distortion.
        num_workers: data-loading processes per training process.
        max_skipped_fraction: stop when more than this share of training reads were unreadable.
    """

    root: str = "data/ade20k/ADEChallengeData2016"
    classes: tuple[str, ...] | None = None
    num_classes: int | None = None
    reduce_zero_label: bool = True
    crop_size: tuple[int, int] = (512, 512)
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    num_workers: int = 4
    max_skipped_fraction: float = 0.01

    def __post_init__(self) -> None:
        if min(self.crop_size) <= 0 or min(self.scale) <= 0:
            raise ConfigError(f"data.crop_size and data.scale must be positive, got {self.crop_size}, {self.scale}")
        if not 0 < self.ratio_range[0] <= self.ratio_range[1]:
            raise ConfigError(f"data.ratio_range must be (low, high) with 0 < low <= high, got {self.ratio_range}")
        if not 0 < self.cat_max_ratio <= 1:
            raise ConfigError(f"data.cat_max_ratio must be in (0, 1], got {self.cat_max_ratio}")
        if self.num_classes is not None and not 0 < self.num_classes < 255:
            raise ConfigError(f"data.num_classes must be in [1, 254] (255 is the ignore label), got {self.num_classes}")


@dataclasses.dataclass
class SolverConfig:
    """Length of training: iterations and images per iteration over all processes."""

    iterations: int = 160_000
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.iterations <= 0:
            raise ConfigError(f"solver.iterations must be positive, got {self.iterations}")
        if self.batch_size <= 0:
            raise ConfigError(f"solver.batch_size must be positive, got {self.batch_size}")


@dataclasses.dataclass
class EvalConfig:
    """Evaluation: sliding-window or whole-image inference, when, and which checkpoint.

    Attributes:
        mode: "slide" (windows of `crop` every `stride`, logits averaged) or "whole".
        crop, stride: sliding-window size and step (512, 341 in the reference).
        every: evaluate every N iterations (and always at the end); 0 = only at the end.
        batch_windows: windows per forward pass in slide mode.
        checkpoint: UperNet checkpoint evaluated by `--eval-only` (a training checkpoint or a
            plain state dict of the whole model).
        max_images: evaluate on the first N validation images only (quick checks); None = all.
    """

    mode: Literal["slide", "whole"] = "slide"
    crop: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    every: int = 16_000
    batch_windows: int = 8
    checkpoint: str | None = None
    max_images: int | None = None

    def __post_init__(self) -> None:
        if min(self.crop) <= 0 or min(self.stride) <= 0:
            raise ConfigError(f"eval.crop and eval.stride must be positive, got {self.crop}, {self.stride}")
        if self.every < 0:
            raise ConfigError(f"eval.every must be >= 0, got {self.every}")


@dataclasses.dataclass
class SegConfig:
    """A whole UperNet transfer experiment (defaults: BEiT's self-supervised ViT-B ADE20k recipe)."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(
        default_factory=lambda: OptimConfig(
            lr=7e-4,
            weight_decay=0.05,
            layer_decay=0.65,
            schedule="poly",
            poly_power=1.0,
            final_lr_ratio=0.0,
            warmup_steps=1500,
            warmup_start=1e-6,
        )
    )
    solver: SolverConfig = dataclasses.field(default_factory=SolverConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    run: RunConfig = dataclasses.field(
        default_factory=lambda: RunConfig(output_dir="runs/seg", log_every=50, ckpt_every_steps=2000)
    )
