"""UperNet on a ViT: encoder -> max-pool / deconvolution pyramid -> UPerHead (+ auxiliary FCN head).

The heads reproduce the reference UPerHead / FCNHead (mmsegmentation, as used by BEiT's ADE20k
recipe) layer for layer:

UPerHead, `C = channels`, input levels 0..3 (strides 4, 8, 16, 32) with `D` channels each:
    lateral_convs[i]  (i = 0..2): 1x1 conv(D -> C) - BN - ReLU
    ppm[s] (s in 1, 2, 3, 6):     AdaptiveAvgPool(s) - 1x1 conv(D -> C) - BN - ReLU - bilinear up
    bottleneck:                   3x3 conv(D + 4C -> C) - BN - ReLU on [level 3, ppm outputs]
    top-down:                     lateral[i-1] += bilinear_up(lateral[i]), i = 3..1
    fpn_convs[i]      (i = 0..2): 3x3 conv(C -> C) - BN - ReLU
    fpn_bottleneck:               3x3 conv(4C -> C) - BN - ReLU on all levels upsampled to level 0
    dropout2d(0.1), classifier 1x1 conv(C -> K)
FCNHead (auxiliary, on level 2): 3x3 conv(D -> 256) - BN - ReLU, dropout2d(0.1), 1x1 conv(256 -> K).

Convolutions followed by BatchNorm have no bias. All bilinear resampling uses align_corners=False.
BatchNorm becomes SyncBatchNorm under DDP on GPUs (`convert_sync_batchnorm`, done by the loop).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import Conv2dNormActivation

from ssl_backbones.adapters import PYRAMID_DIVISOR, MaxPoolDeconvAdapter
from ssl_backbones.vit import create_vit

IGNORE_INDEX = 255


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> Conv2dNormActivation:
    """conv(k x k, 'same' padding, no bias) - BatchNorm2d - ReLU, mmcv's ConvModule default."""
    return Conv2dNormActivation(in_channels, out_channels, kernel_size, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU)


def _upsample(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPoolingModule(nn.Module):
    """PSPNet's pooling pyramid: per scale, AdaptiveAvgPool(s) - 1x1 conv-BN-ReLU - upsample back.

    (B, D, h, w) -> list of len(pool_scales) maps (B, C, h, w).
    """

    def __init__(self, in_channels: int, channels: int, pool_scales: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.pool_scales = tuple(pool_scales)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), conv_bn_relu(in_channels, channels, 1)) for s in self.pool_scales
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [_upsample(stage(x), x.shape[-2:]) for stage in self.stages]


class UPerHead(nn.Module):
    """Unified perceptual parsing head (Xiao et al. 2018) as in mmseg's UPerHead; see module doc.

    Args:
        in_channels: channels of the four input levels (strides 4, 8, 16, 32).
        channels: the head width C (768 for ViT-B in BEiT's recipe, 512 in mmseg's ViT configs).
        num_classes: K.
        pool_scales: PPM output sizes.
        dropout: Dropout2d probability before the classifier.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: int,
        num_classes: int,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"UPerHead expects 4 input levels, got in_channels={list(in_channels)}")
        self.in_channels = list(in_channels)
        self.channels = channels
        self.ppm = PyramidPoolingModule(in_channels[-1], channels, pool_scales)
        self.bottleneck = conv_bn_relu(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = conv_bn_relu(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Four maps (B, D_i, H/s_i, W/s_i), s = 4, 8, 16, 32 -> logits (B, K, H/4, W/4)."""
        top = feats[3]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats[:3])]
        laterals.append(self.bottleneck(torch.cat([top, *self.ppm(top)], dim=1)))
        # Top-down path: coarser levels are added into finer ones (out of place, autograd-safe).
        for i in range(3, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _upsample(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:3])] + [laterals[3]]
        size = outs[0].shape[-2:]
        fused = self.fpn_bottleneck(torch.cat([outs[0]] + [_upsample(o, size) for o in outs[1:]], dim=1))
        return self.classifier(self.dropout(fused))


class FCNHead(nn.Module):
    """mmseg's FCNHead with num_convs=1, concat_input=False: 3x3 conv-BN-ReLU, dropout, 1x1 classifier.

    (B, D, h, w) -> logits (B, K, h, w).
    """

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))


def init_head_weights(head: nn.Module) -> None:
    """mmcv's defaults: ConvModule convs kaiming-normal (fan_out, relu), BN (1, 0), classifier N(0, 0.01)."""
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    classifier = head.classifier
    nn.init.normal_(classifier.weight, std=0.01)
    nn.init.zeros_(classifier.bias)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel cross-entropy averaged over labelled pixels; 0 (with a graph) when none is labelled.

    Args:
        logits: (B, K, H, W) at the label resolution.
        labels: (B, H, W) long, `ignore_index` for unlabelled pixels.
    """
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)


class UperNet(nn.Module):
    """ViT + MaxPoolDeconvAdapter + UPerHead (+ auxiliary FCNHead on level 2).

    Attributes `backbone.encoder` is the ViT, so layer-wise lr decay uses the prefix
    `"backbone.encoder"` (see `ENCODER_PREFIX`).

    Args:
        backbone: a pyramid module returning {"0".."3"} at strides 4..32 with `out_channels` each.
        num_classes: K.
        channels: UPerHead width.
        aux_channels: FCN head width (0 disables the auxiliary head).
        aux_weight: weight of the auxiliary loss.
        dropout: Dropout2d probability of both heads.
    """

    ENCODER_PREFIX = "backbone.encoder"

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        channels: int = 768,
        aux_channels: int = 256,
        aux_weight: float = 0.4,
        dropout: float = 0.1,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        d = backbone.out_channels
        self.decode_head = UPerHead([d] * 4, channels, num_classes, pool_scales, dropout)
        self.aux_head = FCNHead(d, aux_channels, num_classes, dropout) if aux_channels > 0 else None
        self.aux_weight = aux_weight
        init_head_weights(self.decode_head)
        if self.aux_head is not None:
            init_head_weights(self.aux_head)

    def _logits(self, x: torch.Tensor, hw: tuple[int, int], padded_hw: tuple[int, int]) -> torch.Tensor:
        # Upsample to the padded input, then drop the padding so logits align with input pixels.
        return _upsample(x, padded_hw)[..., : hw[0], : hw[1]]

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Logits, or the training losses when labels are given.

        Args:
            images: (B, 3, H, W), any size (the adapter pads to a multiple of 32).
            labels: (B, H, W) long with 255 = ignore, or None.
        Returns:
            logits (B, K, H, W) when `labels` is None, else {"loss", "loss_seg"[, "loss_aux"]} with
            loss = loss_seg + aux_weight * loss_aux.
        """
        H, W = images.shape[-2:]
        feats = self.backbone(images)
        levels = [feats[str(i)] for i in range(4)]
        padded = (H + (-H) % PYRAMID_DIVISOR, W + (-W) % PYRAMID_DIVISOR)
        logits = self._logits(self.decode_head(levels), (H, W), padded)
        if labels is None:
            return logits
        loss_seg = segmentation_loss(logits, labels)
        if self.aux_head is None:
            return {"loss": loss_seg, "loss_seg": loss_seg}
        loss_aux = segmentation_loss(self._logits(self.aux_head(levels[2]), (H, W), padded), labels)
        return {"loss": loss_seg + self.aux_weight * loss_aux, "loss_seg": loss_seg, "loss_aux": loss_aux}


def build_upernet(
    arch: str,
    num_classes: int,
    channels: int = 768,
    aux_channels: int = 256,
    aux_weight: float = 0.4,
    dropout: float = 0.1,
    drop_path: float = 0.1,
    img_size: int = 512,
    out_indices: Sequence[int] | None = None,
    **vit_overrides,
) -> UperNet:
    """ViT `arch` (sin-cos positions for any grid) -> MaxPoolDeconvAdapter -> UperNet.

    `vit_overrides` go to `create_vit` (e.g. depth=2, embed_dim=64, num_heads=2 in tests).
    Encoder weights are loaded separately (`ssl_backbones.load_encoder_weights`).
    """
    encoder = create_vit(arch, pos_embed="sincos", drop_path_rate=drop_path, img_size=img_size, **vit_overrides)
    backbone = MaxPoolDeconvAdapter(encoder, out_indices=out_indices, norm="bn")
    return UperNet(
        backbone, num_classes, channels=channels, aux_channels=aux_channels, aux_weight=aux_weight, dropout=dropout
    )


__all__ = [
    "IGNORE_INDEX",
    "PyramidPoolingModule",
    "UPerHead",
    "FCNHead",
    "UperNet",
    "build_upernet",
    "segmentation_loss",
    "conv_bn_relu",
    "init_head_weights",
]
