"""Window attention and relative-position attention blocks for the ViT (ViTDet, BEiT).

`RelPosBlock` is timm's `Block` with its attention replaced by `RelPosAttention`, which keeps
timm's parameter names (`attn.qkv`, `attn.proj`), so every checkpoint of the plain encoder loads
into it; the relative-position tables are extra parameters (`attn.rel_pos_h`, `attn.rel_pos_w` for
ViTDet's decomposed bias, `attn.relative_position_bias_table` for BEiT's), zero when a checkpoint
has none, which computes exactly what the plain block computes.

A block with `window_size > 0` runs attention inside non-overlapping windows (ViTDet): the
normalised tokens are zero-padded to a multiple of the window on the bottom and right, attention
runs on all windows at once as a batch (padded tokens are keys too, as in ViTDet), and the padding
is cut off again. Window blocks see patch tokens only (no cls token).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from .rel_pos import beit_rel_pos_bias, beit_relative_position_index, beit_table_size, decomposed_rel_pos_bias

RelPosKind = Literal["none", "decomposed", "beit"]


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad and cut a token map into windows.

    Args:
        x: (B, H, W, C).
        window: window side.
    Returns:
        windows (B * nH * nW, window, window, C) and the padded size (Hp, Wp).
    """
    B, H, W, C = x.shape
    pad_h, pad_w = (-H) % window, (-W) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window, window, Wp // window, window, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, C), (Hp, Wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: windows (B * nH * nW, window, window, C) -> (B, H, W, C)."""
    Hp, Wp = padded_hw
    H, W = hw
    C = windows.shape[-1]
    B = windows.shape[0] // ((Hp // window) * (Wp // window))
    x = windows.view(B, Hp // window, Wp // window, window, window, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
    return x[:, :H, :W].contiguous() if (Hp, Wp) != (H, W) else x


class RelPosAttention(nn.Module):
    """Multi-head SDPA attention with an optional relative position bias (timm's names).

    Args:
        dim, num_heads, qkv_bias: as timm's `Attention`.
        rel_pos: "none", "decomposed" (ViTDet) or "beit".
        rel_pos_grid: (h, w) the tables are made for (the window, or the full grid of a global block).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        rel_pos: RelPosKind = "none",
        rel_pos_grid: tuple[int, int] = (14, 14),
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos = rel_pos
        self.rel_pos_grid = tuple(rel_pos_grid)
        h, w = self.rel_pos_grid
        if rel_pos == "decomposed":
            # Zero: without trained tables the block computes what the plain block does.
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * h - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * w - 1, self.head_dim))
        elif rel_pos == "beit":
            self.relative_position_bias_table = nn.Parameter(torch.zeros(beit_table_size((h, w)), num_heads))
            self._index_cache: dict[tuple, torch.Tensor] = {}
        elif rel_pos != "none":
            raise ValueError(f"rel_pos must be 'none', 'decomposed' or 'beit', got {rel_pos!r}")

    def forward(self, x: torch.Tensor, grid: tuple[int, int], num_prefix: int = 0) -> torch.Tensor:
        """Tokens (B, P + h*w, D) -> (B, P + h*w, D); P prefix tokens (cls) come first."""
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        bias = None
        if self.rel_pos == "decomposed":
            if num_prefix:
                raise ValueError("decomposed relative positions need patch tokens only (patch_only=True)")
            bias = decomposed_rel_pos_bias(q, grid, grid, self.rel_pos_h, self.rel_pos_w)
        elif self.rel_pos == "beit":
            table = self.relative_position_bias_table
            key = (tuple(grid), num_prefix, table.device)
            if key not in self._index_cache:  # the index only depends on the grid: build it once
                self._index_cache[key] = beit_relative_position_index(grid, num_prefix).to(table.device)
            bias = beit_rel_pos_bias(table, self.rel_pos_grid, grid, num_prefix, self._index_cache[key]).to(q.dtype)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(x.transpose(1, 2).reshape(B, N, D))


class RelPosBlock(Block):
    """timm `Block` with `RelPosAttention`, global or windowed.

    Args:
        window_size: 0 = global attention over all tokens; > 0 = attention inside windows of this side.
        rel_pos, rel_pos_grid: see `RelPosAttention` (for windowed blocks the grid is the window).
        other arguments: timm's `Block`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 0,
        rel_pos: RelPosKind = "none",
        rel_pos_grid: tuple[int, int] = (14, 14),
        qkv_bias: bool = True,
        **block_kwargs,
    ) -> None:
        super().__init__(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, **block_kwargs)
        self.window_size = window_size
        grid = (window_size, window_size) if window_size > 0 else tuple(rel_pos_grid)
        self.attn = RelPosAttention(dim, num_heads, qkv_bias=qkv_bias, rel_pos=rel_pos, rel_pos_grid=grid)

    def _attend(self, x: torch.Tensor, grid: tuple[int, int], num_prefix: int) -> torch.Tensor:
        if self.window_size <= 0:
            return self.attn(x, grid, num_prefix)
        if num_prefix:
            raise ValueError("window attention needs patch tokens only (build the encoder with patch_only=True)")
        B, _, D = x.shape
        s = self.window_size
        windows, padded = window_partition(x.view(B, grid[0], grid[1], D), s)
        out = self.attn(windows.view(-1, s * s, D), (s, s))
        return window_unpartition(out.view(-1, s, s, D), s, padded, grid).view(B, grid[0] * grid[1], D)

    def forward(self, x: torch.Tensor, grid: tuple[int, int], num_prefix: int = 0) -> torch.Tensor:
        """Tokens (B, P + h*w, D) on an h x w grid -> (B, P + h*w, D)."""
        x = x + self.drop_path1(self.ls1(self._attend(self.norm1(x), grid, num_prefix)))
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
