"""Relative position biases for ViT attention: ViTDet's decomposed form and BEiT's full table.

- Decomposed (MViTv2 / ViTDet): one learned table per axis, (2S - 1, head_dim). The bias of query
  (i, j) on key (k, l) is q . R_h[i - k] + q . R_w[j - l] with the unscaled query q, added to the
  scaled logits. Tables are linearly interpolated along their length when the grid differs from the
  one they were made for.
- BEiT: one scalar per head and relative offset, ((2h - 1)(2w - 1) + 3, heads); the last three
  rows are cls -> patch, patch -> cls and cls -> cls.

Both are turned into an additive (B, heads, Nq, Nk) mask that SDPA adds to the logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BEIT_EXTRA_ROWS = 3  # cls -> patch, patch -> cls, cls -> cls


def resize_rel_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resample a per-axis table (L, C) to (length, C) (ViTDet's `get_rel_pos`)."""
    if table.shape[0] == length:
        return table
    out = F.interpolate(table.t()[None].float(), size=length, mode="linear")
    return out[0].t().to(table.dtype)


def axis_rel_pos(q_size: int, k_size: int, table: torch.Tensor) -> torch.Tensor:
    """Per-axis embeddings of every query/key offset: (q_size, k_size, C).

    The table is resized to 2 * max(q_size, k_size) - 1 entries; offsets are measured on the finer
    grid when the two sizes differ (ViTDet's convention).
    """
    table = resize_rel_table(table, 2 * max(q_size, k_size) - 1)
    q_scale, k_scale = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=table.device)[:, None] * q_scale
    k_coords = torch.arange(k_size, device=table.device)[None, :] * k_scale
    index = (q_coords - k_coords) + (k_size - 1) * k_scale
    return table[index.long()]


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    q_grid: tuple[int, int],
    k_grid: tuple[int, int],
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
) -> torch.Tensor:
    """Additive attention bias from per-axis tables.

    Args:
        q: unscaled queries (B, heads, qh*qw, C), row-major.
        q_grid, k_grid: (h, w) of the query and key grids.
        rel_pos_h, rel_pos_w: tables (Lh, C), (Lw, C).
    Returns:
        bias (B, heads, qh*qw, kh*kw).
    """
    B, H, _, C = q.shape
    (qh, qw), (kh, kw) = q_grid, k_grid
    Rh = axis_rel_pos(qh, kh, rel_pos_h).to(q.dtype)  # (qh, kh, C)
    Rw = axis_rel_pos(qw, kw, rel_pos_w).to(q.dtype)  # (qw, kw, C)
    r_q = q.reshape(B, H, qh, qw, C)
    rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, Rh)
    rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, Rw)
    bias = rel_h[..., :, None] + rel_w[..., None, :]  # (B, H, qh, qw, kh, kw)
    return bias.reshape(B, H, qh * qw, kh * kw)


def beit_table_size(grid: tuple[int, int]) -> int:
    """Rows of BEiT's table for an h x w grid: (2h - 1)(2w - 1) + 3."""
    return (2 * grid[0] - 1) * (2 * grid[1] - 1) + BEIT_EXTRA_ROWS


def beit_relative_position_index(grid: tuple[int, int], num_prefix: int) -> torch.Tensor:
    """BEiT's index of every token pair into the table: (P + h*w, P + h*w) long, P = 0 or 1 (cls)."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = ys[:, None] - ys[None, :] + h - 1
    dx = xs[:, None] - xs[None, :] + w - 1
    patch = dy * (2 * w - 1) + dx
    if num_prefix == 0:
        return patch
    n_rel = (2 * h - 1) * (2 * w - 1)
    index = torch.empty(h * w + 1, h * w + 1, dtype=torch.long)
    index[1:, 1:] = patch
    index[0, 1:] = n_rel  # cls -> patch
    index[1:, 0] = n_rel + 1  # patch -> cls
    index[0, 0] = n_rel + 2
    return index


def resize_beit_table(table: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of the patch part of a BEiT table at run time, for inputs whose grid differs
    from the one the table was made for (the cls rows are kept). (R_src, heads) -> (R_dst, heads)."""
    if tuple(src_grid) == tuple(dst_grid):
        return table
    heads = table.shape[1]
    sh, sw = 2 * src_grid[0] - 1, 2 * src_grid[1] - 1
    dh, dw = 2 * dst_grid[0] - 1, 2 * dst_grid[1] - 1
    patch = table[: sh * sw].t().reshape(1, heads, sh, sw).float()
    patch = F.interpolate(patch, size=(dh, dw), mode="bicubic", align_corners=False)
    patch = patch.reshape(heads, dh * dw).t().to(table.dtype)
    return torch.cat([patch, table[sh * sw :]], dim=0)


def beit_rel_pos_bias(
    table: torch.Tensor,
    table_grid: tuple[int, int],
    grid: tuple[int, int],
    num_prefix: int,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Additive bias (1, heads, N, N) for P + h*w tokens from a BEiT table made for `table_grid`
    (`index`: a cached `beit_relative_position_index(grid, num_prefix)` on the table's device)."""
    table = resize_beit_table(table, table_grid, grid)
    if index is None:
        index = beit_relative_position_index(grid, num_prefix).to(table.device)
    n = index.shape[0]
    return table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)[None]
