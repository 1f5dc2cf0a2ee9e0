"""A resolution-flexible Vision Transformer encoder with timm's parameter names.

The blocks are timm's own (`timm.models.vision_transformer.Block`: SDPA attention, drop path,
optional layer scale), so timm / DeiT / MAE state dicts load without renaming. What this module
adds on top is what self-supervised pretraining and dense transfer need:

- position embeddings for any grid (fixed 2D sin-cos, or learned and resampled bicubically);
- a forward pass on a subset of patch tokens given their indices (MAE, SplitMask);
- intermediate block outputs as (B, C, h, w) maps for non-square inputs (detection, segmentation);
- ViTDet's options for dense transfer: window attention with a few global blocks, decomposed
  relative position biases, and a patch-only path (no cls token) for the dense maps; BEiT's
  relative position bias table (`ssl_backbones.window_attention`). All are off by default, and
  with them on every checkpoint of the plain encoder still loads (the tables start at zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.models.vision_transformer import Block

from engine.errors import ConfigError

from .pos_embed import cached_sincos_2d_pos_embed, resample_pos_embed, sincos_2d_pos_embed
from .window_attention import RelPosBlock, RelPosKind

PosEmbedKind = Literal["sincos", "learned"]

# ViTDet's global-attention blocks among the window blocks, per depth (ViT-B, ViT-L, ViT-H).
VITDET_GLOBAL_BLOCKS: dict[int, tuple[int, ...]] = {12: (2, 5, 8, 11), 24: (5, 11, 17, 23), 32: (7, 15, 23, 31)}


@dataclass(frozen=True)
class ViTSpec:
    """Width, depth and heads of a named ViT size."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


ARCHS: dict[str, ViTSpec] = {
    "vit_tiny": ViTSpec(192, 12, 3),
    "vit_small": ViTSpec(384, 12, 6),
    "vit_base": ViTSpec(768, 12, 12),
    "vit_large": ViTSpec(1024, 24, 16),
    "vit_huge": ViTSpec(1280, 32, 16),
}


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens. Any input whose sides are multiples of the patch size."""

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """(B, C, H, W) -> tokens (B, h*w, D) in row-major order, grid (h, w)."""
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(
                f"input size {H}x{W} is not a multiple of the patch size {p}; "
                "resize or pad the images (the dense adapters pad to a multiple of 32 for you)"
            )
        x = self.proj(x)
        h, w = x.shape[-2:]
        return x.flatten(2).transpose(1, 2), (h, w)


class VisionTransformer(nn.Module):
    """ViT encoder (cls token + patch tokens) that runs on any grid and on token subsets.

    Args:
        img_size: the pretraining resolution; sets the stored `pos_embed` grid (img_size // patch_size).
        patch_size: 16 by default (8 and 14 work).
        embed_dim, depth, num_heads, mlp_ratio: transformer size.
        pos_embed: "sincos" (fixed, computed for any grid) or "learned" (resampled bicubically).
        drop_path_rate: stochastic depth, linearly increasing over the blocks.
        init_values: layer-scale init (None disables layer scale; BEiT uses 0.1).
        grad_checkpointing: recompute block activations in backward to save memory.
        window_size: 0 = global attention everywhere; > 0 = attention inside windows of this side
            (in patches) except in `global_blocks` (ViTDet: 14). Needs `patch_only`.
        global_blocks: blocks that keep global attention when `window_size > 0`; None = ViTDet's
            choice for the depth (`VITDET_GLOBAL_BLOCKS`).
        rel_pos: "none", "decomposed" (ViTDet, per-axis tables, needs `patch_only`) or "beit"
            (BEiT's table, with or without the cls token).
        rel_pos_grid: grid the tables of global blocks are made for (ViTDet: the 1024 px grid, 64);
            None = the pretraining grid. Window blocks' tables are made for the window.
        patch_only: `forward_intermediates` runs the blocks on patch tokens only (ViTDet); the cls
            token and its position slot stay in the state dict but are unused there.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        pos_embed: PosEmbedKind = "sincos",
        drop_path_rate: float = 0.0,
        init_values: float | None = None,
        grad_checkpointing: bool = False,
        window_size: int = 0,
        global_blocks: Sequence[int] | None = None,
        rel_pos: RelPosKind = "none",
        rel_pos_grid: int | tuple[int, int] | None = None,
        patch_only: bool = False,
    ) -> None:
        super().__init__()
        if pos_embed not in ("sincos", "learned"):
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        if (window_size > 0 or rel_pos == "decomposed") and not patch_only:
            raise ValueError("window attention and decomposed relative positions need patch_only=True (ViTDet)")
        img_hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.num_prefix_tokens = 1
        self.pos_embed_kind: PosEmbedKind = pos_embed
        self.grad_checkpointing = grad_checkpointing
        self.grid_size = (img_hw[0] // patch_size, img_hw[1] // patch_size)
        self.patch_only = patch_only
        self.rel_pos = rel_pos
        self.window_size = window_size

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # Stored with a cls slot, as timm does, so checkpoints stay interchangeable. For sin-cos the
        # table is fixed (requires_grad=False) and recomputed for other grids.
        num_pos = 1 + self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, embed_dim), requires_grad=pos_embed == "learned")
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        common = dict(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                      init_values=init_values, norm_layer=partial(nn.LayerNorm, eps=1e-6))
        if window_size > 0 or rel_pos != "none":
            self.global_blocks = _global_blocks(depth, window_size, global_blocks)
            table_grid = _pair(rel_pos_grid) if rel_pos_grid is not None else self.grid_size
            self.blocks = nn.ModuleList(
                RelPosBlock(window_size=0 if i in self.global_blocks else window_size, rel_pos=rel_pos,
                            rel_pos_grid=table_grid, drop_path=dpr[i], **common)
                for i in range(depth)
            )
        else:
            self.global_blocks = tuple(range(depth))
            self.blocks = nn.ModuleList(Block(drop_path=dpr[i], **common) for i in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.init_weights()

    def init_weights(self) -> None:
        """MAE / BEiT-style init: xavier linears, patch projection as a linear, small tokens."""
        if self.pos_embed_kind == "sincos":
            table = sincos_2d_pos_embed(self.embed_dim, *self.grid_size)
            with torch.no_grad():
                self.pos_embed.zero_()
                self.pos_embed[0, 1:].copy_(table)
        else:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def patch_pos_embed(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        """Position embedding of the patch tokens for an h x w grid: (1, h*w, D)."""
        if self.pos_embed_kind == "learned":
            return resample_pos_embed(self.pos_embed[:, 1:], self.grid_size, grid)
        if tuple(grid) == self.grid_size:
            return self.pos_embed[:, 1:]
        return cached_sincos_2d_pos_embed(self.embed_dim, grid[0], grid[1], torch.device(device))

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Patch tokens with positions added (no cls token).

        Args:
            x: images (B, C, H, W), H and W multiples of the patch size.
        Returns:
            tokens (B, h*w, D) row-major, and the grid (h, w).
        """
        tokens, grid = self.patch_embed(x)
        return tokens + self.patch_pos_embed(grid, tokens.device).to(tokens.dtype), grid

    @staticmethod
    def gather(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Select tokens per sample: tokens (B, N, D), ids (B, K) long -> (B, K, D)."""
        return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))

    def _run_blocks(
        self, x: torch.Tensor, blocks: Sequence[nn.Module], grid: tuple[int, int] | None = None, num_prefix: int = 1
    ) -> torch.Tensor:
        """Run `blocks` on tokens (B, P + h*w, D); relative-position / window blocks need the grid."""
        for blk in blocks:
            fn = blk
            if isinstance(blk, RelPosBlock):
                if grid is None:
                    raise ValueError("relative positions / window attention need the full token grid, not a subset")
                fn = partial(blk, grid=grid, num_prefix=num_prefix)
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(fn, x, use_reentrant=False)
            else:
                x = fn(x)
        return x

    def _prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = (self.cls_token + self.pos_embed[:, :1]).to(tokens.dtype)
        return torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Encode already-embedded patch tokens (any subset): (B, K, D) -> (B, 1+K, D), normed."""
        x = self._run_blocks(self._prepend_cls(tokens), self.blocks)
        return self.norm(x)

    def forward_features(self, x: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, C, H, W) -> normed tokens (B, 1+K, D); K = h*w, or ids_keep.shape[1] if given."""
        tokens, grid = self.embed(x)
        if ids_keep is not None:
            return self.forward_tokens(self.gather(tokens, ids_keep))
        return self.norm(self._run_blocks(self._prepend_cls(tokens), self.blocks, grid))

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Raw outputs of the blocks at `indices` as maps, for dense heads.

        Args:
            x: images (B, C, H, W), sides multiples of the patch size.
            indices: block indices (0-based, negative allowed), in any order.
        Returns:
            one (B, D, h, w) map per index, in the order given (cls dropped, no final norm).
            With `patch_only` the blocks never see a cls token (ViTDet).
        """
        wanted = [i % self.depth for i in indices]
        tokens, (h, w) = self.embed(x)
        prefix = 0 if self.patch_only else self.num_prefix_tokens
        z = tokens if self.patch_only else self._prepend_cls(tokens)
        taps: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks[: max(wanted) + 1]):
            z = self._run_blocks(z, [blk], (h, w), prefix)
            if i in wanted:
                taps[i] = z
        B = x.shape[0]
        return [taps[i][:, prefix:].transpose(1, 2).reshape(B, self.embed_dim, h, w) for i in wanted]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> the normed cls token (B, D)."""
        return self.forward_features(x)[:, 0]


def _pair(x: int | Sequence[int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def _global_blocks(depth: int, window_size: int, given: Sequence[int] | None) -> tuple[int, ...]:
    """Indices of the global-attention blocks (all of them without windows)."""
    if window_size <= 0:
        return tuple(range(depth))
    if given is None:
        if depth not in VITDET_GLOBAL_BLOCKS:
            raise ValueError(f"no default global blocks for depth {depth}; pass global_blocks")
        return VITDET_GLOBAL_BLOCKS[depth]
    out = tuple(sorted({i % depth for i in given}))
    if len(out) != len(tuple(given)) or any(not -depth <= i < depth for i in given):
        raise ValueError(f"global_blocks {tuple(given)} must be distinct block indices of a depth-{depth} ViT")
    return out


def create_vit(arch: str, **overrides) -> VisionTransformer:
    """Build a named ViT size ("vit_tiny", "vit_small", "vit_base", "vit_large", "vit_huge").

    `overrides` go to `VisionTransformer` (e.g. patch_size=14, pos_embed="learned", depth=2 for tests).
    """
    if arch not in ARCHS:
        # A ConfigError (a ValueError): the tools print it as a message, not a traceback.
        raise ConfigError(
            f"unknown architecture {arch!r} (--arch / model.arch); choose one of {', '.join(ARCHS)}"
        )
    spec = ARCHS[arch]
    kwargs = dict(embed_dim=spec.embed_dim, depth=spec.depth, num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio)
    kwargs.update(overrides)
    return VisionTransformer(**kwargs)


def default_out_indices(depth: int) -> list[int]:
    """Blocks tapped by the max-pool / deconvolution adapter: [d/3, d/2, 2d/3, d] - 1.

    This reproduces the reference taps (3, 5, 7, 11) for 12 blocks and (7, 11, 15, 23) for 24.
    """
    return [max(1, depth * k // 6) - 1 for k in (2, 3, 4, 6)]
