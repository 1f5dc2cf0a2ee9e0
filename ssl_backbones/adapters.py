"""Adapters that turn a single-scale ViT (stride 16) into a pyramid at strides 4, 8, 16, 32.

- `MaxPoolDeconvAdapter`: SplitMask's detection choice (after XCiT / BEiT's dense heads): taps four
  blocks and resamples each with transposed convolutions or max pooling; keeps `embed_dim` channels.
- `SimpleFeaturePyramid`: ViTDet's design: only the last block, four parallel resampling branches,
  each projected to `out_channels` with LayerNorm; adds a stride-64 level for the RPN.

Both return an `OrderedDict` keyed "0".."3" (plus "pool" for the simple pyramid), expose
`out_channels` and `strides`, and pad any input to a multiple of 32 so every level lines up.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from .vit import VisionTransformer, default_out_indices

PYRAMID_DIVISOR = 32


def pad_to_multiple(x: torch.Tensor, divisor: int = PYRAMID_DIVISOR) -> torch.Tensor:
    """Zero-pad (B, C, H, W) on the right and bottom so H and W are multiples of `divisor`."""
    H, W = x.shape[-2:]
    pad_h, pad_w = (-H) % divisor, (-W) % divisor
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


def _freeze_unused(encoder: VisionTransformer, last_used_block: int) -> None:
    # Dense heads read raw block outputs: the final norm and any block after the last tap never
    # get a gradient. Freezing them keeps DDP from waiting for gradients that never come.
    encoder.norm.requires_grad_(False)
    if getattr(encoder, "patch_only", False):  # ViTDet's path never reads the cls token
        encoder.cls_token.requires_grad_(False)
    for blk in encoder.blocks[last_used_block + 1 :]:
        blk.requires_grad_(False)


class MaxPoolDeconvAdapter(nn.Module):
    """Four tapped ViT blocks -> maps at strides 4, 8, 16, 32, each with `embed_dim` channels.

    stride 4:  ConvT 2x2/2 -> BatchNorm -> GELU -> ConvT 2x2/2
    stride 8:  ConvT 2x2/2
    stride 16: identity
    stride 32: MaxPool 2x2/2

    Args:
        encoder: the ViT (patch size 16).
        out_indices: the four blocks to tap; default [d/3, d/2, 2d/3, d] - 1 (3, 5, 7, 11 for 12 blocks).
        norm: "bn" (converted to SyncBatchNorm under DDP by the training loop) or "none".
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        out_indices: Sequence[int] | None = None,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        if encoder.patch_size != 16:
            raise ValueError(f"MaxPoolDeconvAdapter expects patch size 16, got {encoder.patch_size}")
        self.encoder = encoder
        self.out_indices = list(out_indices) if out_indices is not None else default_out_indices(encoder.depth)
        if len(self.out_indices) != 4:
            raise ValueError(f"out_indices needs 4 block indices, got {self.out_indices}")
        d = encoder.embed_dim
        self.fpn1 = nn.Sequential(
            nn.ConvTranspose2d(d, d, kernel_size=2, stride=2),
            nn.BatchNorm2d(d) if norm == "bn" else nn.Identity(),
            nn.GELU(),
            nn.ConvTranspose2d(d, d, kernel_size=2, stride=2),
        )
        self.fpn2 = nn.ConvTranspose2d(d, d, kernel_size=2, stride=2)
        self.fpn3 = nn.Identity()
        self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.out_channels = d
        self.strides = [4, 8, 16, 32]
        _freeze_unused(encoder, max(i % encoder.depth for i in self.out_indices))

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Images (B, 3, H, W) -> {"0": (B, D, H'/4, W'/4), ..., "3": (B, D, H'/32, W'/32)}, H' = H padded to 32."""
        maps = self.encoder.forward_intermediates(pad_to_multiple(x), self.out_indices)
        ops = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        return OrderedDict((str(i), op(m)) for i, (op, m) in enumerate(zip(ops, maps)))


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid on the last block: strides 4, 8, 16, 32 (+ 64 as "pool").

    x4:   ConvT(d, d/2) -> LN -> GELU -> ConvT(d/2, d/4)
    x2:   ConvT(d, d/2)
    x1:   identity
    x0.5: MaxPool 2x2/2
    each followed by 1x1 conv -> LN and 3x3 conv -> LN to `out_channels`; "pool" = max-pool of
    the stride-32 output (kernel 1, stride 2) as in ViTDet.
    """

    def __init__(self, encoder: VisionTransformer, out_channels: int = 256) -> None:
        super().__init__()
        self.encoder = encoder
        d = encoder.embed_dim
        scales = [
            nn.Sequential(
                nn.ConvTranspose2d(d, d // 2, kernel_size=2, stride=2),
                LayerNorm2d(d // 2),
                nn.GELU(),
                nn.ConvTranspose2d(d // 2, d // 4, kernel_size=2, stride=2),
            ),
            nn.ConvTranspose2d(d, d // 2, kernel_size=2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        ]
        in_dims = [d // 4, d // 2, d, d]
        self.scales = nn.ModuleList(scales)
        self.projections = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, out_channels, kernel_size=1, bias=False),
                LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
                LayerNorm2d(out_channels),
            )
            for c in in_dims
        )
        self.out_channels = out_channels
        self.strides = [4, 8, 16, 32, 64]
        _freeze_unused(encoder, encoder.depth - 1)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """Images (B, 3, H, W) -> {"0": stride 4, ..., "3": stride 32, "pool": stride 64}, `out_channels` each."""
        (last,) = self.encoder.forward_intermediates(pad_to_multiple(x), [-1])
        out = OrderedDict(
            (str(i), proj(scale(last))) for i, (scale, proj) in enumerate(zip(self.scales, self.projections))
        )
        out["pool"] = F.max_pool2d(out["3"], kernel_size=1, stride=2)
        return out
