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

The encoder lives at `backbone.body.encoder` (`ENCODER_PREFIX`) for layer-wise lr decay.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ssl_backbones import load_encoder_weights
from ssl_backbones.adapters import MaxPoolDeconvAdapter, SimpleFeaturePyramid
from ssl_backbones.vit import VisionTransformer, create_vit

from .config import ModelConfig

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


def build_mask_rcnn(
    cfg: ModelConfig,
    num_classes: int,
    test_size: int = 800,
    test_max_size: int = 1333,
    detections_per_image: int = 100,
    score_threshold: float = 0.05,
    allow_pickle: bool = False,
    encoder: VisionTransformer | None = None,
) -> MaskRCNN:
    """torchvision Mask R-CNN on our ViT pyramid.

    Args:
        cfg: the model section of the config.
        num_classes: number of object categories (background is added here).
        test_size, test_max_size: evaluation resize (short side, long-side cap); training images
            are not resized by the model (see the module docstring).
        detections_per_image: 100 (COCO) or 300 (LVIS).
        score_threshold: minimum score of a kept detection (0.05 COCO, 0.02 LVIS).
        allow_pickle: let the encoder-weights loader read legacy pickles.
        encoder: an already built encoder (skips `build_encoder`; benchmarks and tests).
    Returns:
        the detector; in training mode `model(images, targets)` returns the loss dict, in eval mode
        `model(images)` returns per image {"boxes" (K, 4) xyxy in input-image pixels, "labels" (K,),
        "scores" (K,), "masks" (K, 1, H, W) probabilities}.
    """
    if encoder is None:
        encoder = build_encoder(cfg, allow_pickle=allow_pickle)
    backbone = build_backbone(cfg, encoder)
    c = cfg.fpn_channels
    # torchvision's standard heads (TwoMLPHead on 7x7 RoIs, four 3x3 convs + deconv on 14x14),
    # built here only so their widths follow the config.
    box_head = TwoMLPHead(c * 7 * 7, cfg.box_head_dim)
    mask_head = MaskRCNNHeads(c, [cfg.mask_head_channels] * 4, dilation=1)
    anchors = AnchorGenerator(tuple((s,) for s in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * len(cfg.anchor_sizes))
    return MaskRCNN(
        backbone,
        rpn_anchor_generator=anchors,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(cfg.box_head_dim, num_classes + 1),
        mask_head=mask_head,
        mask_predictor=MaskRCNNPredictor(cfg.mask_head_channels, cfg.mask_head_channels, num_classes + 1),
        rpn_batch_size_per_image=cfg.rpn_batch_size,
        box_batch_size_per_image=cfg.roi_batch_size,
        min_size=test_size,
        max_size=test_max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        size_divisible=32,
        box_detections_per_img=detections_per_image,
        box_score_thresh=score_threshold,
        _skip_resize=True,
    )


def encoder_of(model: nn.Module) -> VisionTransformer:
    """The ViT inside a (possibly DDP-wrapped) detector built by `build_mask_rcnn`."""
    model = getattr(model, "module", model)
    return model.backbone.body.encoder
