"""Typed configuration of a classification transfer run: fine-tuning, linear probe or k-NN.

A config file in `cls_configs/` builds a `ClsConfig` and assigns it to a module-level `config`;
files compose by importing each other and `dataclasses.replace`. `--set key=value` overrides any
field (`engine.config.apply_overrides`). Fine-tuning lengths are in epochs (Table 9 of the
SplitMask paper is epoch-based); the loop turns them into optimizer steps.

`DATASETS` names the paper's datasets with their sizes (Table 3) and `paper_recipe` builds the
Table 9 fine-tuning recipe for one of them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from engine.config import ConfigError, OptimConfig, RunConfig

__all__ = [
    "ModelConfig", "DataConfig", "AugConfig", "SolverConfig", "EvalConfig", "ProbeConfig", "ClsConfig",
    "DatasetPreset", "DATASETS", "paper_recipe", "OptimConfig", "RunConfig",
]

Mode = Literal["finetune", "linear", "knn"]
Pool = Literal["cls", "mean"]


@dataclasses.dataclass
class ModelConfig:
    """ViT encoder + linear classifier.

    Attributes:
        arch: encoder size (`ssl_backbones.vit.ARCHS`).
        weights: encoder initialisation, any layout `ssl_backbones.load_encoder_weights` reads (our
            pretraining checkpoints, `encoder.safetensors` exports, MAE / BEiT / DeiT / timm);
            None = random init (the paper's scratch rows).
        pool: "cls" (the normed cls token) or "mean" (mean of the patch tokens, then a LayerNorm,
            MAE's global pool).
        drop_path: stochastic depth of the encoder (0.1 in Table 9).
        layer_scale: layer-scale init (0.1 for BEiT checkpoints); None = none.
        head_init_std: std of the classifier's truncated-normal init (MAE: 2e-5).
        embed_dim, depth, num_heads: override the named size (tests, small experiments).
    """

    arch: str = "vit_base"
    weights: str | None = None
    pool: Pool = "cls"
    drop_path: float = 0.1
    layer_scale: float | None = None
    head_init_std: float = 2e-5
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"model.drop_path must be in [0, 1), got {self.drop_path}")


@dataclasses.dataclass
class DataConfig:
    """An ImageFolder dataset: `root/train/<class>/*` and `root/val/<class>/*`.

    Attributes:
        root: the folder holding `train/` and `val/`.
        dataset: a name in `DATASETS` (recorded; sizes are checked against it when given) or None.
        img_size: training and test resolution (224 in Table 9).
        num_workers: loader processes per training process.
        max_skipped_fraction: stop when more than this share of training reads were unreadable.
    """

    root: str = "data/cls"
    dataset: str | None = None
    img_size: int = 224
    num_workers: int = 8
    max_skipped_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.img_size <= 0:
            raise ConfigError(f"data.img_size must be positive, got {self.img_size}")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ConfigError(f"data.dataset={self.dataset!r} is not one of {sorted(DATASETS)} (or None)")


@dataclasses.dataclass
class AugConfig:
    """timm's training pipeline (DeiT / BEiT fine-tuning).

    `color_jitter` is passed to `timm.data.create_transform`, which (as DeiT) drops colour jitter
    when RandAugment is on: Table 9 lists both, the reference code applies RandAugment only.

    Attributes:
        rand_augment: timm auto-augment string ("rand-m9-mstd0.5-inc1"; "" disables it).
        color_jitter: colour jitter strength.
        scale: RandomResizedCrop area range.
        hflip: horizontal flip probability.
        mixup, cutmix: Beta alphas (0 disables each); `mix_prob`, `switch_prob` as timm's Mixup.
        label_smoothing: applied to the (mixed) targets.
        repeated_aug: DeiT's repeated augmentation (3 augmented copies per image and epoch).
        num_repeats: copies per image with `repeated_aug`.
        test_crop_ratio: centre crop of the resized test image (0.875).
        interpolation: resize interpolation ("bicubic").
    """

    rand_augment: str = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    mixup: float = 0.8
    cutmix: float = 1.0
    mix_prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    repeated_aug: bool = False
    num_repeats: int = 3
    test_crop_ratio: float = 0.875
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.mixup < 0 or self.cutmix < 0:
            raise ConfigError(f"aug.mixup and aug.cutmix must be >= 0, got {self.mixup}, {self.cutmix}")
        if not 0 < self.test_crop_ratio <= 1:
            raise ConfigError(f"aug.test_crop_ratio must be in (0, 1], got {self.test_crop_ratio}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"aug.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.num_repeats < 1:
            raise ConfigError(f"aug.num_repeats must be >= 1, got {self.num_repeats}")


@dataclasses.dataclass
class SolverConfig:
    """Length and batch of fine-tuning.

    Attributes:
        epochs: passes over the training set (300 in Table 9).
        warmup_epochs: linear warmup (5 for iNat / Food, 60 for Cars / DomainNet).
        batch_size: images per update over all processes (1024 in Table 9).
        accum_iter: micro-batches per update.
        lr_reference_batch: `optim.lr` is the lr at this batch; the run uses
            `optim.lr * batch_size / lr_reference_batch` (linear scaling). None = no scaling.
    """

    epochs: int = 300
    warmup_epochs: int = 5
    batch_size: int = 1024
    accum_iter: int = 1
    lr_reference_batch: int | None = 1024

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0 or self.accum_iter <= 0:
            raise ConfigError(
                f"solver.epochs, batch_size and accum_iter must be positive, got "
                f"{self.epochs}, {self.batch_size}, {self.accum_iter}"
            )
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"solver.warmup_epochs={self.warmup_epochs} must be in [0, epochs={self.epochs})")


@dataclasses.dataclass
class EvalConfig:
    """Evaluation of the fine-tuned classifier.

    Attributes:
        every_epochs: evaluate every N epochs (and always at the end); 0 = only at the end.
        batch_size: images per forward pass (per process).
        checkpoint: classifier checkpoint evaluated by `--eval-only`.
        max_images: evaluate on the first N validation images only (quick checks).
    """

    every_epochs: int = 10
    batch_size: int = 128
    checkpoint: str | None = None
    max_images: int | None = None


@dataclasses.dataclass
class ProbeConfig:
    """Frozen-encoder evaluation: a linear probe (MAE's) or k-NN (DINO's), on cached features.

    Attributes:
        feature: "cls" token or "mean" of the patch tokens, after the encoder's final LayerNorm.
        blocks: blocks probed (0-based, negative allowed); () = the last block only. "all" layers
            for Figure 5: set `all_blocks`.
        all_blocks: probe every block in one run (one linear head per block) and draw the curve.
        epochs, batch_size, base_lr, weight_decay, warmup_epochs, momentum: the linear probe's
            LARS recipe (MAE: 90 epochs, batch 16384, base lr 0.1 per 256, wd 0, 10 warmup);
            the lr is `base_lr * batch_size / 256`.
        optimizer: "lars" (MAE) or "sgd" (SGD with momentum, same lr rule).
        k, temperature: k-NN neighbours and the vote's temperature (DINO: 20, 0.07).
        batch_features: images per forward pass while extracting features.
        max_train_images: use the first N training images only (quick checks); None = all.
    """

    feature: Pool = "cls"
    blocks: tuple[int, ...] = ()
    all_blocks: bool = False
    epochs: int = 90
    batch_size: int = 16384
    base_lr: float = 0.1
    weight_decay: float = 0.0
    warmup_epochs: int = 10
    momentum: float = 0.9
    optimizer: Literal["lars", "sgd"] = "lars"
    k: int = 20
    temperature: float = 0.07
    batch_features: int = 128
    max_train_images: int | None = None

    def __post_init__(self) -> None:
        if self.k <= 0 or self.temperature <= 0:
            raise ConfigError(f"probe.k and probe.temperature must be positive, got {self.k}, {self.temperature}")
        if self.epochs <= 0 or self.batch_size <= 0 or not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(
                f"probe.epochs, batch_size must be positive and warmup_epochs in [0, epochs), got "
                f"{self.epochs}, {self.batch_size}, {self.warmup_epochs}"
            )


@dataclasses.dataclass
class ClsConfig:
    """A whole classification transfer experiment (defaults: Table 9's iNat recipe, ViT-B)."""

    mode: Mode = "finetune"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    aug: AugConfig = dataclasses.field(default_factory=AugConfig)
    optim: OptimConfig = dataclasses.field(
        default_factory=lambda: OptimConfig(lr=1.4e-4, weight_decay=0.05, schedule="cosine", warmup_start=0.0)
    )
    solver: SolverConfig = dataclasses.field(default_factory=SolverConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    probe: ProbeConfig = dataclasses.field(default_factory=ProbeConfig)
    run: RunConfig = dataclasses.field(
        default_factory=lambda: RunConfig(output_dir="runs/cls", log_every=50, ckpt_every_steps=2000)
    )


@dataclasses.dataclass(frozen=True)
class DatasetPreset:
    """A dataset of the paper (Table 3) and its Table 9 fine-tuning recipe.

    `pretrain_epochs` is Table 3's pretraining length (the constant-updates rule: as many updates
    as 300 ImageNet epochs, at most 5000 epochs).
    """

    num_train: int
    num_test: int
    num_classes: int
    pretrain_epochs: int
    lr: float
    layer_decay: float | None
    warmup_epochs: int
    repeated_aug: bool
    rand_augment: str


_NAT = dict(lr=1.4e-4, layer_decay=None, warmup_epochs=5, repeated_aug=True, rand_augment="rand-m7-mstd0.5-inc1")
_SMALL = dict(lr=4e-3, layer_decay=0.65, warmup_epochs=60, repeated_aug=False, rand_augment="rand-m9-mstd0.5-inc1")

DATASETS: dict[str, DatasetPreset] = {
    "inat18": DatasetPreset(437_513, 24_426, 8_142, 800, **_NAT),
    "inat19": DatasetPreset(265_240, 3_003, 1_010, 1_400, **_NAT),
    "food101": DatasetPreset(75_750, 25_250, 101, 5_000, **_NAT),
    "cars": DatasetPreset(8_144, 8_041, 196, 5_000, **_SMALL),
    "clipart": DatasetPreset(34_019, 14_818, 345, 5_000, **_SMALL),
    "painting": DatasetPreset(52_867, 22_892, 345, 5_000, **_SMALL),
    "sketch": DatasetPreset(49_115, 21_271, 345, 5_000, **_SMALL),
}


def paper_recipe(dataset: str, arch: str, weights: str | None, root: str, random_init: bool = False) -> ClsConfig:
    """Table 9's fine-tuning recipe for `dataset` on `arch` (300 epochs, batch 1024, AdamW, cosine).

    `random_init=True` gives the paper's scratch rows: no encoder weights and no layer decay (layer
    decay shrinks the lr of blocks that have nothing to keep).
    """
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; choose one of {sorted(DATASETS)}")
    p = DATASETS[dataset]
    return ClsConfig(
        model=ModelConfig(arch=arch, weights=None if random_init else weights, drop_path=0.1),
        data=DataConfig(root=root, dataset=dataset, img_size=224),
        aug=AugConfig(rand_augment=p.rand_augment, repeated_aug=p.repeated_aug),
        optim=OptimConfig(lr=p.lr, weight_decay=0.05, layer_decay=None if random_init else p.layer_decay,
                          schedule="cosine", warmup_start=0.0),
        solver=SolverConfig(epochs=300, warmup_epochs=p.warmup_epochs, batch_size=1024),
        run=RunConfig(output_dir=f"runs/cls_{dataset}_{arch}_{'random' if random_init else 'pretrained'}",
                      log_every=50, ckpt_every_steps=2000),
    )
