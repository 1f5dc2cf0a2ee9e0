"""Typed configuration of a pretraining run (dataclasses; `--set section.field=value` overrides).

`default_config(method, data)` gives the reference hyper-parameters (BEiT's for BEiT and SplitMask,
MAE's for MAE; the demo's small sizes for `data="demo"`); `tools/pretrain.py` applies its flags and
`--set` overrides on top. Derived values (lr from blr, warmup steps, epochs from the constant-updates
rule) are resolved by `pretrain.loop.train` and written to the run's `config.json`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from engine.config import ConfigError, OptimConfig, RunConfig

__all__ = [
    "DataConfig",
    "DinoConfig",
    "MaskConfig",
    "ModelConfig",
    "PretrainConfig",
    "ScheduleConfig",
    "TokenizerConfig",
    "IMAGENET_TRAIN_IMAGES",
    "PAPER_EPOCHS",
    "default_config",
    "resolve_epochs",
]

IMAGENET_TRAIN_IMAGES = 1_281_167
# Table 3 of the SplitMask paper (constant number of updates); LVIS trains on COCO's images.
PAPER_EPOCHS = {"coco": 3000, "lvis": 3000, "ade20k": 21000}
MAX_AUTO_EPOCHS = 5000
# The paper's small-data recipe (uniform 75% masking + strong augmentation) is chosen below this many
# images: it used it for Stanford Cars, ClipArt, Painting and Sketch (8,144-52,867 images), not for
# Food-101 (75,750), COCO or ADE20k (which has its own crop rule).
SMALL_DATASET_IMAGES = 60_000
# Warmup as a fraction of the pretraining epochs when schedule.warmup_epochs is None: BEiT /
# SplitMask 10 of 300 ImageNet epochs; MAE 40 of 800.
WARMUP_FRACTION = {"splitmask": 1 / 30, "beit": 1 / 30, "mae": 40 / 800, "dino": 1 / 30}


@dataclass
class DataConfig:
    """Which unlabeled images, how they are augmented, and how broken files are tolerated."""

    name: Literal["coco", "ade20k", "lvis", "folder", "wds", "demo"] = "demo"
    root: str | None = None
    # auto: ade20k on ADE20k, small below SMALL_DATASET_IMAGES, else the method's (mae: crops 0.2-1)
    augment: Literal["auto", "default", "ade20k", "mae", "small"] = "auto"
    img_size: int = 224
    num_workers: int = 8
    max_images: int | None = None  # use only the first N files (quick experiments)
    # Subsets for sample-efficiency studies (Table 1: ImageNet 1% / 10%), applied in this order:
    # file_list (one path per line: absolute, relative to the root, or a unique file name), then a
    # seeded random fraction of what is left, then max_images. The same seed selects the same files.
    file_list: str | None = None
    fraction: float | None = None  # in (0, 1]; None: all files
    subset_seed: int = 0
    max_broken_fraction: float = 0.01
    broken_check_after: int = 1000  # attempted images before the fraction is enforced
    max_retries: int = 10  # replacement images tried for one broken sample

    def __post_init__(self) -> None:
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ConfigError(f"data.fraction must be in (0, 1] (e.g. 0.01 for 1%), got {self.fraction}")


@dataclass
class MaskConfig:
    """Masking. kind "auto": uniform for the `small` augmentation recipe, else the method's default
    (block-wise for SplitMask / BEiT; MAE always masks uniformly on the device)."""

    kind: Literal["auto", "block", "uniform"] = "auto"
    uniform_ratio: float = 0.75
    min_block: int | None = None  # None: 16 at 14x14, scaled with the grid
    max_block: int | None = None  # None: SplitMask 75 at 14x14 (scaled), BEiT = its masked count
    beit_num_masked: int | None = None  # None: 75 at 14x14, scaled with the grid


@dataclass
class TokenizerConfig:
    kind: Literal["random_projection", "random_patches", "kmeans"] = "random_projection"
    vocab_size: int = 8192
    patch_size: int = 8
    downsample: int = 2
    num_samples: int = 3_000_000  # patches sampled for random_patches / kmeans (3M in the paper)
    kmeans_iters: int = 300
    kmeans_batch: int = 16384


@dataclass
class ModelConfig:
    method: Literal["splitmask", "beit", "mae", "dino"] = "splitmask"
    arch: str = "vit_small"
    patch_size: int = 16
    pos_embed: Literal["sincos", "learned"] = "sincos"
    drop_path: float = 0.1
    layer_scale: float | None = None  # None: 0.1 for BEiT, none otherwise; 0 disables
    embed_dim: int | None = None  # size overrides of the named arch (tests, custom sizes)
    depth: int | None = None
    num_heads: int | None = None
    grad_checkpointing: bool = False
    init: str | None = None  # start the encoder from this checkpoint (e.g. MAE pre-pretraining)
    # SplitMask
    decoder_depth: int = 2
    tau: float = 0.2
    use_mim: bool = True
    use_contrastive: bool = True
    contrastive_weight: float = 1.0
    # MAE
    mae_decoder_dim: int = 512
    mae_decoder_depth: int = 8
    mae_decoder_heads: int = 16
    mae_mask_ratio: float = 0.75
    norm_pix_loss: bool = True


@dataclass
class DinoConfig:
    """DINO (Caron et al. 2021): head, loss, teacher and schedules, and its multi-crop views.

    The global crops have `data.img_size` pixels; local crops `local_crop_size` (a multiple of the
    patch size). Schedules run over the whole run: the teacher momentum and the weight decay follow
    a cosine from their start to their end value, the teacher temperature rises linearly from
    `warmup_teacher_temp` to `teacher_temp` over `warmup_teacher_temp_epochs` epochs.
    """

    out_dim: int = 65536  # prototypes K
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    student_temp: float = 0.1
    teacher_temp: float = 0.04  # 0.07 with warm-up from 0.04 over 30 epochs is the paper's option
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    center_momentum: float = 0.9
    momentum_teacher: float = 0.996  # -> 1.0, cosine
    weight_decay_end: float = 0.4  # from optim.weight_decay (0.04), cosine
    freeze_last_layer_epochs: int = 1
    global_crop_scale: tuple[float, float] = (0.4, 1.0)
    local_crops_number: int = 10
    local_crop_size: int = 96
    local_crop_scale: tuple[float, float] = (0.05, 0.4)

    def __post_init__(self) -> None:
        for key in (
            "out_dim",
            "hidden_dim",
            "bottleneck_dim",
            "student_temp",
            "teacher_temp",
            "warmup_teacher_temp",
        ):
            if not getattr(self, key) > 0:
                raise ConfigError(f"dino.{key} must be positive, got {getattr(self, key)}")
        if not 0 <= self.momentum_teacher <= 1 or not 0 <= self.center_momentum <= 1:
            raise ConfigError("dino.momentum_teacher and dino.center_momentum must be in [0, 1]")
        for key in ("global_crop_scale", "local_crop_scale"):
            lo, hi = getattr(self, key)
            if not 0 < lo <= hi <= 1:
                raise ConfigError(f"dino.{key} must be (min, max) with 0 < min <= max <= 1, got {(lo, hi)}")
        if self.local_crops_number < 0:
            raise ConfigError(f"dino.local_crops_number must be >= 0, got {self.local_crops_number}")


@dataclass
class ProbeConfig:
    """A health probe while pretraining: every `every_epochs` epochs (and at the end), a frozen-feature
    linear probe of the encoder on a small labelled split of the target, beside the same probe on a
    random-init encoder of the same shape, plus the features' effective rank (`transfer.probing`).
    Logged as `val/probe/<metric>/block<t>` and `val/probe_random/...`; `probe_curve.png` at the end.

    data "auto": the labels that come with the pretraining source (ADE20k label maps for ade20k,
    COCO instance masks for coco and the demo, class folders `train/<class>/` for folder). Needs the
    `target-ssl-pretrain` command (or `python -m target_ssl.pretrain`), which can import the probe.
    """

    every_epochs: int = 0  # 0: off
    data: Literal["auto", "ade20k", "coco", "folder", "demo_ade", "demo_coco"] = "auto"
    root: str | None = None  # None: data.root
    img_size: int | None = None  # None: data.img_size
    max_train: int = 256  # images that fit the probe
    max_val: int = 128  # images that score it
    taps: tuple[int, ...] | None = None  # None: the dense adapter's taps (3 5 7 11 of 12 blocks)

    def __post_init__(self) -> None:
        if self.every_epochs < 0:
            raise ConfigError(f"probe.every_epochs must be >= 0 (0 turns the probe off), got {self.every_epochs}")


@dataclass
class ScheduleConfig:
    """Length and batch. lr = blr * (batch_size * world_size * accum_iter) / 256 unless blr is None,
    in which case optim.lr is used as given."""

    epochs: int | None = None  # None = auto (constant-updates rule, see resolve_epochs)
    batch_size: int = 64  # per process
    accum_iter: int = 1
    blr: float | None = 1.5e-3 * 256 / 2048  # BEiT: 1.5e-3 at batch 2048
    warmup_epochs: float | None = None  # None: epochs x WARMUP_FRACTION (1/30; MAE 1/20)
    stop_at_step: int | None = None  # halt (with a checkpoint) after this many updates; schedule unchanged


@dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=1.5e-3,
            weight_decay=0.05,
            betas=(0.9, 0.999),
            clip_grad=3.0,
            schedule="cosine",
            warmup_start=0.0,
        )
    )
    run: RunConfig = field(
        default_factory=lambda: RunConfig(output_dir="runs/pretrain", ckpt_every_steps=1000)
    )


def default_config(method: str = "splitmask", data: str = "demo") -> PretrainConfig:
    """Reference hyper-parameters for `method` on `data`.

    BEiT / SplitMask: AdamW (0.9, 0.999), wd 0.05, blr 1.875e-4 (1.5e-3 at 2048), clip 3.0.
    MAE: AdamW (0.9, 0.95), blr 1.5e-4, no clipping. DINO: AdamW (0.9, 0.999), wd 0.04 -> 0.4,
    blr 5e-4, clip 3.0, lr down to 1e-6 at batch 256, 2 x 224 + 10 x 96 crops (warm-up: the
    default epochs / 30, i.e. DINO's 10 of 300 ImageNet epochs under the constant-updates rule).
    Demo: 128 px, batch 16, blr 4e-3, 2 workers, a log line per update (DINO: 64 px local crops,
    6 of them, 4096 prototypes).
    """
    cfg = PretrainConfig()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, method=method))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, name=data))
    if method == "mae":  # MAE trains without drop path
        cfg = dataclasses.replace(
            cfg,
            model=dataclasses.replace(cfg.model, drop_path=0.0),
            optim=dataclasses.replace(cfg.optim, betas=(0.9, 0.95), clip_grad=None),
            schedule=dataclasses.replace(cfg.schedule, blr=1.5e-4),
        )
    if method == "dino":
        cfg = dataclasses.replace(
            cfg,
            optim=dataclasses.replace(
                cfg.optim, weight_decay=0.04, clip_grad=3.0, final_lr_ratio=1e-6 / 5e-4
            ),
            schedule=dataclasses.replace(cfg.schedule, blr=5e-4),
        )
    if data == "demo":
        # Few images and few epochs: a larger base lr so the loss visibly falls, a point per update.
        cfg = dataclasses.replace(
            cfg,
            # The standard crop + flip recipe, not the small-data one its 96 images would select:
            # what the demo's probe and fine-tuning numbers were measured with.
            data=dataclasses.replace(cfg.data, img_size=128, num_workers=2, augment="default"),
            schedule=dataclasses.replace(cfg.schedule, batch_size=16, blr=4e-3),
            run=dataclasses.replace(cfg.run, log_every=1),
        )
        if method == "dino":
            cfg = dataclasses.replace(
                cfg,
                dino=dataclasses.replace(cfg.dino, local_crop_size=64, local_crops_number=6, out_dim=4096),
            )
    return cfg


def resolve_epochs(dataset: str, num_images: int, epochs: int | None) -> int:
    """Epochs of a run: `epochs` if given, else the constant-updates rule of the paper (Table 3).

    COCO and LVIS 3,000, ADE20k 21,000; any other data as many updates as 300 ImageNet epochs
    (300 * 1,281,167 / N epochs at equal batch size), capped at 5,000 epochs.
    """
    if epochs is not None:
        if epochs <= 0:
            raise ValueError(f"epochs must be positive, got {epochs}")
        return epochs
    if dataset in PAPER_EPOCHS:
        return PAPER_EPOCHS[dataset]
    return max(1, min(MAX_AUTO_EPOCHS, round(300 * IMAGENET_TRAIN_IMAGES / num_images)))
