"""A ViT encoder + linear classifier for fine-tuning, and per-block features for frozen probes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ssl_backbones.vit import VisionTransformer, create_vit

__all__ = ["ViTClassifier", "build_classifier", "block_features"]


class ViTClassifier(nn.Module):
    """Encoder -> pooled feature -> Linear(D, K).

    `pool="cls"`: the normed cls token (`encoder.forward`). `pool="mean"`: the mean of the patch
    tokens of the last block, then its own LayerNorm (`fc_norm`, MAE's global pool; the encoder's
    final norm is skipped as in MAE). The encoder is `self.encoder`, so layer decay uses the
    prefix `"encoder"` (`ENCODER_PREFIX`).
    """

    ENCODER_PREFIX = "encoder"

    def __init__(self, encoder: VisionTransformer, num_classes: int, pool: str = "cls", head_init_std: float = 2e-5) -> None:
        super().__init__()
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.encoder = encoder
        self.pool = pool
        self.fc_norm = nn.LayerNorm(encoder.embed_dim, eps=1e-6) if pool == "mean" else nn.Identity()
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=head_init_std)
        nn.init.zeros_(self.head.bias)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D)."""
        if self.pool == "cls":
            return self.encoder(images)
        tokens, _ = self.encoder.embed(images)
        x = self.encoder._run_blocks(self.encoder._prepend_cls(tokens), self.encoder.blocks)
        return self.fc_norm(x[:, self.encoder.num_prefix_tokens :].mean(dim=1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> logits (B, K)."""
        return self.head(self.features(images))


def build_classifier(
    arch: str,
    num_classes: int,
    img_size: int,
    pool: str = "cls",
    drop_path: float = 0.1,
    head_init_std: float = 2e-5,
    layer_scale: float | None = None,
    **vit_overrides,
) -> ViTClassifier:
    """ViT `arch` with sin-cos positions at `img_size` + classifier; weights are loaded separately
    (`ssl_backbones.load_encoder_weights`). `vit_overrides` go to `create_vit`."""
    encoder = create_vit(arch, pos_embed="sincos", drop_path_rate=drop_path, img_size=img_size,
                         init_values=layer_scale, **vit_overrides)
    return ViTClassifier(encoder, num_classes, pool=pool, head_init_std=head_init_std)


@torch.no_grad()
def block_features(encoder: VisionTransformer, images: torch.Tensor, blocks: Sequence[int], feature: str = "cls") -> torch.Tensor:
    """Frozen features of several blocks in one pass.

    Each tapped block's tokens go through the encoder's final LayerNorm (for the last block this
    is exactly `forward_features`), then the cls token or the mean of the patch tokens is taken.

    Args:
        images: (B, 3, H, W).
        blocks: block indices (0-based, negative allowed).
        feature: "cls" or "mean".
    Returns:
        (B, len(blocks), D).
    """
    wanted = [b % encoder.depth for b in blocks]
    tokens, _ = encoder.embed(images)
    x = encoder._prepend_cls(tokens)
    taps: dict[int, torch.Tensor] = {}
    for i, blk in enumerate(encoder.blocks[: max(wanted) + 1]):
        x = blk(x)
        if i in wanted:
            z = encoder.norm(x)
            taps[i] = z[:, 0] if feature == "cls" else z[:, encoder.num_prefix_tokens :].mean(dim=1)
    return torch.stack([taps[i] for i in wanted], dim=1)
