"""Mask R-CNN with a plain ViT backbone: encoder -> pyramid adapter (-> FPN) -> torchvision heads.

The detector is torchvision's `MaskRCNN` unchanged (RPN, RoIAlign, box and mask heads); only the
backbone is ours:

- "maxpool_deconv" (SplitMask): four tapped blocks -> strides 4/8/16/32 with `embed_dim` channels
  -> torchvision `FeaturePyramidNetwork` (256 channels) with a max-pooled p6 (`LastLevelMaxPool`).
- "simple_fpn" (ViTDet): last block -> four resampled maps, each projected to 256 channels, plus
  "pool" (p6); already a complete Mask R-CNN backbone.

Resizing: the training pipeline (`transforms.py`) resizes, crops and flips, so the model's
`GeneralizedRCNNTransform` must not resize training images again; it is built with
`_skip_resize=True` (torchvision's own switch for pipelines that resize in the data loader; it only
acts in training mode). At evaluation the data loader hands over the original images and the model
resizes them to `test_size` (long side <= `test_max_size`) and maps boxes and pasted masks back to
the original image (`GeneralizedRCNNTransform.postprocess`). Images are normalised with the
ImageNet mean / std (what the encoders were pretrained with) and padded to multiples of 32.

ViTDet's recipe is a set of options (`ModelConfig`): window attention with relative positions in
the encoder, LayerNorm'd conv heads ("vitdet": `RPNHead(conv_depth=2)`, `FastRCNNConvFCHead`
4 conv + 1 fc, `MaskRCNNHeads` with LayerNorm), Cascade R-CNN box stages and the federated
LVIS loss (`cascade.CascadeRoIHeads`, which replaces torchvision's `RoIHeads` when either is on).

The encoder lives at `backbone.body.encoder` (`ENCODER_PREFIX`) for layer-wise lr decay.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from timm.layers import LayerNorm2d
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ssl_backbones import load_encoder_weights
from ssl_backbones.adapters import MaxPoolDeconvAdapter, SimpleFeaturePyramid
from ssl_backbones.vit import VisionTransformer, create_vit

from .cascade import CascadeRoIHeads, ClassAgnosticPredictor
from .config import ModelConfig
from .federated_loss import FederatedLoss, fed_loss_class_weights

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ENCODER_PREFIX",
    "ViTPyramidBackbone",
    "build_encoder",
    "build_backbone",
    "build_mask_rcnn",
    "encoder_of",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ENCODER_PREFIX = "backbone.body.encoder"

_log = logging.getLogger("target_ssl")


class ViTPyramidBackbone(nn.Module):
    """ViT + adapter (+ FPN) as a torchvision detection backbone.

    Args:
        body: a pyramid adapter holding the encoder as `.encoder` (keys "0".."3", maybe "pool").
        fpn: None when `body` already outputs the final pyramid (simple feature pyramid), else a
            module mapping the body's dict to the final one (torchvision FPN with p6).
        out_channels: channels of every output level (the RPN and RoI heads read this).
    """

    def __init__(self, body: nn.Module, fpn: nn.Module | None, out_channels: int) -> None:
        super().__init__()
        self.body = body
        self.fpn = fpn if fpn is not None else nn.Identity()
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Normalised, padded images (B, 3, H, W) -> {"0": stride 4, ..., "3": stride 32, "pool": 64}."""
        return self.fpn(self.body(x))


def build_encoder(cfg: ModelConfig, allow_pickle: bool = False) -> VisionTransformer:
    """The ViT of `cfg`, initialised from `cfg.weights` (any supported layout) or randomly.

    Raises:
        FileNotFoundError: `cfg.weights` is set but the file does not exist.
        ssl_backbones.ArchitectureMismatchError: the weights are of another architecture.
    """
    overrides: dict = dict(
        patch_size=cfg.patch_size,
        pos_embed=cfg.pos_embed,
        drop_path_rate=cfg.drop_path,
        init_values=cfg.layer_scale,
        grad_checkpointing=cfg.grad_checkpointing,
        patch_only=cfg.patch_only,
        window_size=cfg.window_size,
        global_blocks=cfg.global_blocks,
        rel_pos=cfg.rel_pos,
        rel_pos_grid=cfg.rel_pos_grid,
    )
    for name in ("embed_dim", "depth", "num_heads"):
        if getattr(cfg, name) is not None:
            overrides[name] = getattr(cfg, name)
    encoder = create_vit(cfg.arch, **overrides)
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"encoder weights {str(path)!r} (model.weights) do not exist. Point the config at a "
                "pretraining checkpoint or an exported encoder: --weights PATH, --set model.weights=PATH, "
                "or the environment variable named in the config file; use --set model.weights=none "
                "for random initialisation."
            )
        load_encoder_weights(encoder, path, allow_pickle=allow_pickle, logger=_log)
    return encoder


def build_backbone(cfg: ModelConfig, encoder: VisionTransformer) -> ViTPyramidBackbone:
    """Wrap `encoder` into the pyramid backbone selected by `cfg.adapter`."""
    if cfg.adapter == "maxpool_deconv":
        body = MaxPoolDeconvAdapter(encoder, out_indices=cfg.out_indices, norm=cfg.adapter_norm)
        fpn = FeaturePyramidNetwork(
            in_channels_list=[body.out_channels] * 4,
            out_channels=cfg.fpn_channels,
            extra_blocks=LastLevelMaxPool(),
        )
        return ViTPyramidBackbone(body, fpn, cfg.fpn_channels)
    if cfg.adapter == "simple_fpn":
        body = SimpleFeaturePyramid(encoder, out_channels=cfg.fpn_channels)
        return ViTPyramidBackbone(body, None, cfg.fpn_channels)
    raise ValueError(f"model.adapter must be 'maxpool_deconv' or 'simple_fpn', got {cfg.adapter!r}")


def _box_head(cfg: ModelConfig) -> nn.Module:
    """One stage's box head on 7x7 RoIs: torchvision's 2-MLP, or ViTDet's 4 conv + 1 fc with LayerNorm."""
    c = cfg.fpn_channels
    if cfg.heads == "vitdet":
        return FastRCNNConvFCHead((c, 7, 7), [c] * 4, [cfg.box_head_dim], norm_layer=LayerNorm2d)
    return TwoMLPHead(c * 7 * 7, cfg.box_head_dim)


def _mask_head(cfg: ModelConfig) -> nn.Module:
    """Four 3x3 convs on 14x14 RoIs (with LayerNorm for ViTDet); the predictor adds the deconv."""
    norm = partial(LayerNorm2d) if cfg.heads == "vitdet" else None
    return MaskRCNNHeads(cfg.fpn_channels, [cfg.mask_head_channels] * 4, dilation=1, norm_layer=norm)


def _class_loss(cfg: ModelConfig, num_classes: int, class_image_counts: Sequence[float] | None) -> nn.Module | None:
    if cfg.cls_loss != "federated":
        return None
    if class_image_counts is None:
        _log.warning(
            "federated loss without class image counts: negatives are sampled uniformly; pass "
            "class_image_counts=train_dataset.class_image_counts() to build_mask_rcnn for ViTDet's weighting"
        )
        class_image_counts = [1.0] * num_classes
    if len(class_image_counts) != num_classes:
        raise ValueError(f"{len(class_image_counts)} class image counts for {num_classes} classes")
    return FederatedLoss(fed_loss_class_weights(class_image_counts, cfg.fed_loss_power), cfg.fed_loss_classes)


def _cascade_roi_heads(
    cfg: ModelConfig, model: MaskRCNN, num_classes: int, class_image_counts: Sequence[float] | None
) -> CascadeRoIHeads:
    """Replace torchvision's RoI heads: cascade stages and / or the federated classification loss.

    Without `cfg.cascade` this is a single IoU-0.5 stage with the model's own class-specific box
    head and predictor, i.e. torchvision's Mask R-CNN head with another classification loss."""
    rh = model.roi_heads
    if cfg.cascade:
        box_heads = [_box_head(cfg) for _ in cfg.cascade_ious]
        predictors = [ClassAgnosticPredictor(cfg.box_head_dim, num_classes + 1) for _ in cfg.cascade_ious]
        ious, weights, loss_w = cfg.cascade_ious, cfg.cascade_box_weights, cfg.cascade_loss_weights
    else:
        box_heads, predictors = [rh.box_head], [rh.box_predictor]
        ious, weights, loss_w = (0.5,), ((10.0, 10.0, 5.0, 5.0),), (1.0,)
    return CascadeRoIHeads(
        rh.box_roi_pool, box_heads, predictors, stage_ious=ious, stage_box_weights=weights,
        stage_loss_weights=loss_w, mask_roi_pool=rh.mask_roi_pool, mask_head=rh.mask_head,
        mask_predictor=rh.mask_predictor, batch_size_per_image=cfg.roi_batch_size,
        positive_fraction=rh.fg_bg_sampler.positive_fraction, score_thresh=rh.score_thresh,
        nms_thresh=rh.nms_thresh, detections_per_img=rh.detections_per_img,
        cls_loss=_class_loss(cfg, num_classes, class_image_counts), sigmoid_scores=cfg.cls_loss == "federated",
    )


def build_mask_rcnn(
    cfg: ModelConfig,
    num_classes: int,
    test_size: int = 800,
    test_max_size: int = 1333,
    detections_per_image: int = 100,
    score_threshold: float = 0.05,
    allow_pickle: bool = False,
    encoder: VisionTransformer | None = None,
    class_image_counts: Sequence[float] | None = None,
) -> MaskRCNN:
    """torchvision Mask R-CNN (or Cascade Mask R-CNN) on our ViT pyramid.

    Args:
        cfg: the model section of the config.
        num_classes: number of object categories (background is added here).
        test_size, test_max_size: evaluation resize (short side, long-side cap); training images
            are not resized by the model (see the module docstring).
        detections_per_image: 100 (COCO) or 300 (LVIS).
        score_threshold: minimum score of a kept detection (0.05 COCO, 0.02 LVIS).
        allow_pickle: let the encoder-weights loader read legacy pickles.
        encoder: an already built encoder (skips `build_encoder`; benchmarks and tests).
        class_image_counts: images per class 1..K (LVIS `image_count`), for the federated loss.
    Returns:
        the detector; in training mode `model(images, targets)` returns the loss dict, in eval mode
        `model(images)` returns per image {"boxes" (K, 4) xyxy in input-image pixels, "labels" (K,),
        "scores" (K,), "masks" (K, 1, H, W) probabilities}.
    """
    if encoder is None:
        encoder = build_encoder(cfg, allow_pickle=allow_pickle)
    backbone = build_backbone(cfg, encoder)
    # Built in the same order as before the ViTDet options, so default configs initialise identically.
    box_head, mask_head = _box_head(cfg), _mask_head(cfg)
    anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * len(cfg.anchor_sizes))
    # ViTDet's RPN has two 3x3 convs; None = torchvision's default one-conv RPN head.
    rpn_head = RPNHead(cfg.fpn_channels, 3, conv_depth=2) if cfg.heads == "vitdet" else None
    model = MaskRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, num_classes + 1),
        mask_head=mask_head,
        mask_predictor=MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels, num_classes + 1),
        rpn_batch_size_per_image=cfg.rpn_batch_size,
        box_batch_size_per_image=cfg.roi_batch_size,
        box_positive_fraction=cfg.roi_positive_fraction,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n[0],
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n[1],
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n[0],
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n[1],
        min_size=test_size,
        max_size=test_max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        size_divisible=32,
        box_detections_per_img=detections_per_image,
        box_score_thresh=score_threshold,
        _skip_resize=True,
    )
    if cfg.cascade or cfg.cls_loss != "softmax":
        model.roi_heads = _cascade_roi_heads(cfg, model, num_classes, class_image_counts)
    return model


def encoder_of(model: nn.Module) -> VisionTransformer:
    """The ViT inside a (possibly DDP-wrapped) detector built by `build_mask_rcnn`."""
    model = getattr(model, "module", model)
    return model.backbone.body.encoder
