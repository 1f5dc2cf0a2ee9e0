"""Typed configuration of a Mask R-CNN transfer run (COCO, LVIS or any COCO-format json).

A config file in `det_configs/` builds a `DetConfig` and assigns it to a module-level `config`;
files compose by importing each other and using `dataclasses.replace`. Command-line overrides
(`--set optim.lr=2e-4 data.root=/data/coco`) are applied by `engine.config.apply_overrides`.

Schedule units: the recipes are written in epochs (`solver.epochs`, `solver.milestones`), which the
loop turns into optimizer steps once the number of iterations per epoch is known. The warmup is in
iterations (`optim.warmup_steps`, 500 in the paper's recipe). `optim.milestones` (steps) stays empty
in detection configs; when set, it takes precedence over the epoch milestones.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from engine.config import ConfigError, OptimConfig, RunConfig

__all__ = [
    "ModelConfig",
    "DataConfig",
    "SolverConfig",
    "EvalConfig",
    "DetConfig",
    "OptimConfig",
    "RunConfig",
    "MULTISCALE_SIZES",
]

# Liu et al. 3x multi-scale training: short side 480..800 in steps of 32, long side <= 1333.
MULTISCALE_SIZES: tuple[int, ...] = tuple(range(480, 801, 32))
# The libraries that can score detections (`eval_backends`).
EVAL_BACKENDS = ("auto", "pycocotools", "faster_coco_eval")


@dataclasses.dataclass
class ModelConfig:
    """The detector: a ViT encoder, a pyramid adapter and torchvision's Mask R-CNN heads.

    Attributes:
        arch: encoder size (`ssl_backbones.vit.ARCHS`: vit_tiny / vit_small / vit_base / ...).
        adapter: "maxpool_deconv" (SplitMask: 4 tapped blocks -> deconv / max-pool -> FPN with a
            max-pooled p6) or "simple_fpn" (ViTDet: last block only, its own 256-ch projections).
        weights: encoder initialisation: any checkpoint layout `ssl_backbones.weights_io` reads
            (our pretraining checkpoints, exported encoders, MAE / BEiT / DeiT / timm); None = random.
        drop_path: stochastic depth rate of the encoder (linearly increasing over blocks).
        pos_embed: "sincos" (the paper's choice for detection: fixed, any input size) or "learned"
            (resampled bicubically to each input grid).
        patch_size: encoder patch size (the adapters expect 16).
        out_indices: blocks tapped by the max-pool / deconv adapter; None = [d/3, d/2, 2d/3, d] - 1.
        adapter_norm: normalisation inside the stride-4 branch of the max-pool / deconv adapter
            ("bn" becomes SyncBatchNorm under DDP).
        fpn_channels: channels of every pyramid level fed to the RPN / RoI heads.
        anchor_sizes: RPN anchor side per pyramid level (strides 4..64), three aspect ratios each;
            torchvision / detectron2 use (32, 64, 128, 256, 512) for COCO at ~800 px.
        box_head_dim: width of the two-layer MLP box head (torchvision / detectron2: 1024).
        mask_head_channels: channels of the four 3x3 convs (and deconv) of the mask head (256).
        rpn_batch_size: anchors sampled per image for the RPN loss (256).
        roi_batch_size: proposals sampled per image for the box / mask losses (512).
        roi_positive_fraction: at most this share of those proposals are objects (0.25).
        rpn_pre_nms_top_n, rpn_post_nms_top_n: (training, evaluation) proposals per pyramid level
            before the RPN's NMS, and per image after it (torchvision: (2000, 1000) both); images
            with a few objects need far fewer, and the NMS is a sixth of a CPU demo step.
        The last seven only change for small experiments (the CPU demo); real configs keep the
        standard Mask R-CNN values.
        layer_scale: layer-scale init of the encoder blocks (None = no layer scale; BEiT
            checkpoints carry layer-scale weights, so BEiT configs set 0.1).
        embed_dim, depth, num_heads: override the named size (tests and small experiments).
        grad_checkpointing: recompute encoder blocks in backward (memory for ViT-B/L at 1024 px).

    ViTDet's recipe (all off by default, which is the SplitMask paper's recipe):
        patch_only: the encoder runs on patch tokens only for the dense maps (no cls token).
        window_size: attention inside windows of this many patches (ViTDet: 14); 0 = global.
        global_blocks: blocks with global attention among window blocks; None = ViTDet's
            (ViT-B 2, 5, 8, 11; ViT-L 5, 11, 17, 23; ViT-H 7, 15, 23, 31).
        rel_pos: "decomposed" adds ViTDet's per-axis relative position biases (zero-initialised).
        rel_pos_grid: grid of the global blocks' tables (ViTDet: 64 at 1024 px); None = the
            pretraining grid. Tables are interpolated to the actual grid either way.
        heads: "torchvision" (1-conv RPN, 2-MLP box head, 4-conv mask head) or "vitdet" (2-conv
            RPN, 4 conv + 1 fc box head and 4-conv mask head with LayerNorm).
        cascade: Cascade Mask R-CNN box heads (`cascade.py`) instead of Mask R-CNN's single stage.
        cascade_ious, cascade_box_weights, cascade_loss_weights: per stage; detectron2's defaults.
        cls_loss: "softmax" cross-entropy, or "federated" sigmoid cross-entropy (LVIS; needs the
            per-class image counts, `build_mask_rcnn(class_image_counts=...)`).
        fed_loss_classes: classes per batch in the federated loss (50), positives included.
        fed_loss_power: sampling weight = image count ** this (0.5).
    """

    arch: str = "vit_small"
    adapter: Literal["maxpool_deconv", "simple_fpn"] = "maxpool_deconv"
    weights: str | None = None
    drop_path: float = 0.1
    pos_embed: Literal["sincos", "learned"] = "sincos"
    patch_size: int = 16
    out_indices: tuple[int, ...] | None = None
    adapter_norm: Literal["bn", "none"] = "bn"
    fpn_channels: int = 256
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    box_head_dim: int = 1024
    mask_head_channels: int = 256
    rpn_batch_size: int = 256
    roi_batch_size: int = 512
    roi_positive_fraction: float = 0.25
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000)
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000)
    layer_scale: float | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    grad_checkpointing: bool = False
    patch_only: bool = False
    window_size: int = 0
    global_blocks: tuple[int, ...] | None = None
    rel_pos: Literal["none", "decomposed"] = "none"
    rel_pos_grid: int | None = None
    heads: Literal["torchvision", "vitdet"] = "torchvision"
    cascade: bool = False
    cascade_ious: tuple[float, ...] = (0.5, 0.6, 0.7)
    cascade_box_weights: tuple[tuple[float, float, float, float], ...] = (
        (10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0)
    )
    cascade_loss_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    cls_loss: Literal["softmax", "federated"] = "softmax"
    fed_loss_classes: int = 50
    fed_loss_power: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"model.drop_path must be in [0, 1), got {self.drop_path}")
        if (self.window_size > 0 or self.rel_pos == "decomposed") and not self.patch_only:
            raise ConfigError(
                "model.window_size / model.rel_pos='decomposed' need model.patch_only=True (ViTDet runs its "
                "blocks on patch tokens only)"
            )
        stages = (len(self.cascade_ious), len(self.cascade_box_weights), len(self.cascade_loss_weights))
        if len(set(stages)) != 1:
            raise ConfigError(
                f"model.cascade_ious / cascade_box_weights / cascade_loss_weights need one entry per stage, got {stages}"
            )
        if self.fed_loss_classes <= 0:
            raise ConfigError(f"model.fed_loss_classes must be positive, got {self.fed_loss_classes}")
        if not 0.0 < self.roi_positive_fraction <= 1.0:
            raise ConfigError(f"model.roi_positive_fraction must be in (0, 1], got {self.roi_positive_fraction}")
        if min(*self.rpn_pre_nms_top_n, *self.rpn_post_nms_top_n) < 1:
            raise ConfigError(
                f"model.rpn_pre_nms_top_n / rpn_post_nms_top_n need two positive counts (training, evaluation), "
                f"got {self.rpn_pre_nms_top_n} / {self.rpn_post_nms_top_n}"
            )
        if len(self.anchor_sizes) != 5:
            raise ConfigError(f"model.anchor_sizes needs one size per level (5: strides 4..64), got {self.anchor_sizes}")
        if self.out_indices is not None and len(self.out_indices) != 4:
            raise ConfigError(f"model.out_indices needs 4 block indices, got {self.out_indices}")


@dataclasses.dataclass
class DataConfig:
    """Where the images and annotations are, and how training images are augmented.

    Layouts (`kind`):
        coco:   `root/annotations/instances_{train,val}2017.json`, images in `root/{train,val}2017/`.
        lvis:   `root/annotations/lvis_v1_{train,val}.json` with the COCO images of `root/train2017/`
                and `root/val2017/` (found through each image's `coco_url`; LVIS val uses some
                COCO train images).
        custom: any COCO-format json; set `train_json`, `val_json`, `train_images`, `val_images`.
    `train_json` / `val_json` / `train_images` / `val_images` also override the coco / lvis
    defaults; relative paths are taken relative to `root`.

    Augmentation (`policy`):
        multiscale_crop: Liu et al. 3x: horizontal flip; with p=0.5 resize the short side to one of
            `train_sizes` (long side <= `max_size`), else resize to one of `crop_pre_sizes`, crop a
            random `crop_size` rectangle and resize to one of `train_sizes`.
        lsj: ViTDet's large-scale jitter: resize to `lsj_scale` x `lsj_size`, fixed `lsj_size`
            square crop, padded.
        fixed: flip and one short-side size (`train_sizes[-1]`), e.g. for quick runs.
    `class_agnostic`: train one "object" class (every category is label 1) and score with
    COCOeval's `useCats=0`, where a box matches ground truth of any category: localisation and
    masks without classification, e.g. for proposals, or for a schedule too short to tell the
    classes apart (the CPU demo). COCO / custom layouts only.
    `max_skipped_fraction`: training stops with an error once more than this fraction of the
    images read so far (and more than 10) could not be decoded.
    Evaluation images are resized by the model to short side `test_size` (long side <=
    `test_max_size`) and predictions are mapped back to the original image.
    """

    kind: Literal["coco", "lvis", "custom"] = "coco"
    root: str = "data/coco"
    train_json: str | None = None
    val_json: str | None = None
    train_images: str | None = None
    val_images: str | None = None
    policy: Literal["multiscale_crop", "lsj", "fixed"] = "multiscale_crop"
    train_sizes: tuple[int, ...] = MULTISCALE_SIZES
    max_size: int = 1333
    crop_pre_sizes: tuple[int, ...] = (400, 500, 600)
    crop_size: tuple[int, int] = (384, 600)
    lsj_size: int = 1024
    lsj_scale: tuple[float, float] = (0.1, 2.0)
    test_size: int = 800
    test_max_size: int = 1333
    filter_empty: bool = True
    class_agnostic: bool = False
    repeat_factor_threshold: float | None = None
    num_workers: int = 4
    max_skipped_fraction: float = 0.01

    def __post_init__(self) -> None:
        if not self.train_sizes:
            raise ConfigError("data.train_sizes must list at least one short-side size")
        if self.crop_size[0] > self.crop_size[1]:
            raise ConfigError(f"data.crop_size must be (min, max), got {self.crop_size}")
        if self.class_agnostic and self.kind == "lvis":
            raise ConfigError("data.class_agnostic is for COCO / custom layouts: LVIS's federated evaluation needs its classes")
        if self.repeat_factor_threshold is not None and not self.repeat_factor_threshold > 0:
            raise ConfigError(f"data.repeat_factor_threshold must be positive or None, got {self.repeat_factor_threshold}")


@dataclasses.dataclass
class SolverConfig:
    """Length of training and batch sizes (the paper: 16 images per step, 36 epochs, x0.1 at 27, 33).

    Attributes:
        epochs: passes over the training set (over the repeat-factor-resampled set for LVIS).
        milestones: epochs at which the lr is multiplied by `optim.gamma`.
        batch_size: images per step over all processes; must be a multiple of the world size.
        max_iters: run exactly this many steps instead (short runs / tests); the lr schedule is
            compressed to it, the milestones keeping their fraction of the run.
    """

    epochs: int = 36
    milestones: tuple[int, ...] = (27, 33)
    batch_size: int = 16
    max_iters: int | None = None

    def __post_init__(self) -> None:
        if self.epochs <= 0:
            raise ConfigError(f"solver.epochs must be positive, got {self.epochs}")
        # milestones vs epochs is checked when the run starts (`loop.step_schedule`), so that
        # overrides may change the two in any order.
        if self.batch_size <= 0:
            raise ConfigError(f"solver.batch_size must be positive, got {self.batch_size}")


@dataclasses.dataclass
class EvalConfig:
    """Evaluation: when, how many detections, and which checkpoint for `--eval-only`.

    Attributes:
        every_epochs: evaluate every N epochs (and always at the end); 0 = only at the end.
        detections_per_image: 100 for COCO, 300 for LVIS.
        score_threshold: minimum detection score kept (0.05 COCO, 0.02 LVIS).
        batch_size: images per process during evaluation.
        checkpoint: detector checkpoint evaluated by `--eval-only` (a training checkpoint or a
            plain state dict of the whole Mask R-CNN).
        max_images: evaluate on the first N validation images only (quick checks); None = all.
        backend: the library that scores the detections: "auto" (faster-coco-eval when installed,
            else pycocotools / lvis), "pycocotools" (the reference: pycocotools, or `lvis` for
            LVIS), "faster_coco_eval" (the same numbers, several times faster; `pip install
            faster-coco-eval`).
    """

    every_epochs: int = 1
    detections_per_image: int = 100
    score_threshold: float = 0.05
    batch_size: int = 2
    checkpoint: str | None = None
    max_images: int | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in EVAL_BACKENDS:
            raise ConfigError(f"eval.backend must be one of {', '.join(EVAL_BACKENDS)}, got {self.backend!r}")


@dataclasses.dataclass
class DetConfig:
    """A whole Mask R-CNN transfer experiment."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(
        default_factory=lambda: OptimConfig(
            lr=1e-4, weight_decay=0.05, schedule="multistep", warmup_steps=500, warmup_start=0.001
        )
    )
    solver: SolverConfig = dataclasses.field(default_factory=SolverConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(output_dir="runs/det", log_every=20))
