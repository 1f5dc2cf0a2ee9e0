"""MAE: masked autoencoder with a normalised-pixel target (He et al.; DESIGN 4.3).

The encoder runs on the visible 25% of the patches only (uniform random masking, batched on the
device); a light decoder (512 wide, 8 blocks by default) with fixed 2D sin-cos positions reads the
encoded tokens plus a shared mask token at every removed position and regresses the pixels of the
removed patches. Target: each patch's pixels (patchify order (p, q, c)) normalised by their own mean
and variance, (t - mean) / sqrt(var + 1e-6); the loss is the MSE averaged over removed patches.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ssl_backbones.pos_embed import sincos_2d_pos_embed
from ssl_backbones.vit import VisionTransformer

from ..masking import random_masking
from ..patches import patchify
from .common import init_head_weights, transformer_blocks


def normalized_pixel_target(images: torch.Tensor, patch_size: int, eps: float = 1e-6) -> torch.Tensor:
    """(B, 3, H, W) -> (B, n, p*p*3): per-patch (t - mean) / sqrt(var + eps).

    The variance is the unbiased one (divisor p*p*3 - 1), as in the reference code (`Tensor.var`).
    """
    target = patchify(images.float(), patch_size)
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + eps) ** 0.5


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over removed patches of the per-patch mean squared error.

    pred, target: (B, n, P); mask: (B, n), 1 = removed (counted), 0 = visible.
    """
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


class MAE(nn.Module):
    """Masked autoencoder around a ViT encoder.

    Args:
        encoder: the ViT (`self.encoder`).
        decoder_dim, decoder_depth, decoder_heads: decoder size (512, 8, 16 in the paper).
        mask_ratio: fraction of patches removed (0.75).
        norm_pix_loss: normalise each target patch (the paper's better variant); raw pixels otherwise.

    Batch: `{"images": (B, 3, H, W)}`; the mask is drawn here from the device RNG.
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_heads: int = 16,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        p = encoder.patch_size
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder = transformer_blocks(decoder_dim, decoder_depth, decoder_heads)
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, p * p * 3)
        self.decoder_dim = decoder_dim
        self._pos_cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}
        for part in (self.decoder_embed, self.decoder, self.decoder_norm, self.decoder_pred):
            init_head_weights(part)  # the encoder keeps its own init
        nn.init.normal_(self.mask_token, std=0.02)

    def decoder_pos_embed(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Fixed sin-cos positions (1, 1 + h*w, Dd) with a zero cls slot."""
        key = (grid[0], grid[1], device)
        if key not in self._pos_cache:
            table = sincos_2d_pos_embed(self.decoder_dim, *grid)
            self._pos_cache[key] = torch.cat([torch.zeros(1, self.decoder_dim), table]).to(device)[None]
        return self._pos_cache[key]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["images"]
        tokens, grid = self.encoder.embed(images)
        B, n, _ = tokens.shape
        ids_keep, ids_restore, mask = random_masking(B, n, self.mask_ratio, tokens.device)
        latent = self.encoder.forward_tokens(self.encoder.gather(tokens, ids_keep))  # (B, 1+K, D)

        x = self.decoder_embed(latent)
        K = ids_keep.shape[1]
        filler = self.mask_token.to(x.dtype).expand(B, n - K, -1)
        patches = self.encoder.gather(torch.cat([x[:, 1:], filler], dim=1), ids_restore)  # unshuffle
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed(grid, x.device).to(x.dtype)
        for blk in self.decoder:
            x = blk(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]  # (B, n, p*p*3)

        p = self.encoder.patch_size
        target = normalized_pixel_target(images, p) if self.norm_pix_loss else patchify(images.float(), p)
        loss = masked_mse(pred, target, mask)
        return {"loss": loss, "mse": loss.detach()}
