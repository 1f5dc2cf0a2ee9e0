"""Position embeddings for ViTs that run at any input resolution.

Two kinds are supported:
- fixed 2D sin-cos (the MAE formula), computed for whatever grid the input produces, so the same
  encoder runs at 224 px in pretraining and at 512 / 1024 px in transfer;
- learned absolute embeddings, stored for one grid and resampled bicubically to the input grid.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1D sin-cos embedding of `positions` (N,) -> (N, embed_dim) as [sin(p w_k) | cos(p w_k)].

    w_k = 1 / 10000^(k / (embed_dim / 2)) for k = 0 .. embed_dim/2 - 1.
    """
    if embed_dim % 2 != 0:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {embed_dim}")
    k = torch.arange(embed_dim // 2, dtype=torch.float64)
    omega = 1.0 / 10000 ** (k / (embed_dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]  # (N, D/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d_pos_embed(embed_dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """2D sin-cos position embedding for an h x w grid of patches, row-major like patch flattening.

    The first D/2 channels encode the column index x, the last D/2 the row index y (MAE's layout).

    Returns:
        (grid_h * grid_w, embed_dim) float32 tensor.
    """
    if embed_dim % 4 != 0:
        raise ValueError(f"2D sin-cos embedding needs a dimension divisible by 4, got {embed_dim}")
    ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    emb_x = sincos_1d(embed_dim // 2, xs.reshape(-1))
    emb_y = sincos_1d(embed_dim // 2, ys.reshape(-1))
    return torch.cat([emb_x, emb_y], dim=1).float()


# Multi-scale training and 800-1333 px evaluation produce hundreds of grid sizes; a ViT-B table at
# ~2,400 tokens is ~7 MB, so the cache keeps the most recent few (~120 MB at most for ViT-B at that
# size) and recomputes others (about a millisecond on the CPU plus one copy to the device).
SINCOS_CACHE_SIZE = 16


@functools.lru_cache(maxsize=SINCOS_CACHE_SIZE)
def cached_sincos_2d_pos_embed(
    embed_dim: int, grid_h: int, grid_w: int, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """:func:`sincos_2d_pos_embed` as (1, h*w, D) on `device`, kept in a bounded LRU cache.

    Keyed by (embed_dim, grid_h, grid_w, device, dtype) and shared by all encoders; callers must not
    modify the returned tensor in place.
    """
    with torch.inference_mode(False):  # a table made during inference must still serve training
        return sincos_2d_pos_embed(embed_dim, grid_h, grid_w).to(device=device, dtype=dtype)[None]


def resample_pos_embed(
    pos_embed: torch.Tensor, old_hw: tuple[int, int], new_hw: tuple[int, int]
) -> torch.Tensor:
    """Resample a learned patch position embedding (1, h0*w0, D) to (1, h*w, D), bicubic."""
    if tuple(old_hw) == tuple(new_hw):
        return pos_embed
    dim = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, old_hw[0], old_hw[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=new_hw, mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, new_hw[0] * new_hw[1], dim).to(pos_embed.dtype)
