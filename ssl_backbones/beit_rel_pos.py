"""BEiT checkpoints' relative position bias, loaded into an encoder built with rel_pos="beit".

BEiT pretrains with a table made for the 14 x 14 grid at 224 px (often one table shared by all
blocks, `rel_pos_bias.relative_position_bias_table`) and fine-tunes at other grids (32 x 32 for
ADE20k at 512 px). Its authors report that linear interpolation of the table degrades ADE20k
markedly and resample it on a geometric progression instead: the source offsets 0, +-1, +-(1 + q),
+-(1 + q + q^2), ... are spread so the largest reaches the target's largest offset, and a bicubic
spline through them is read at the target's integer offsets. Offsets 0 and +-1 keep their values
exactly (the spline interpolates), and an unchanged size is an identity.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from scipy.interpolate import RectBivariateSpline

from .rel_pos import BEIT_EXTRA_ROWS, beit_table_size

_SHARED = "rel_pos_bias.relative_position_bias_table"
_BLOCK_TABLE = re.compile(r"^blocks\.(\d+)\.attn\.relative_position_bias_table$")


def _progression_ratio(src_half: int, dst_half: int) -> float:
    """q such that 1 + q + ... + q^(src_half - 1) = dst_half (bisection, as BEiT does)."""
    lo, hi = 1.01, 1.5
    while hi - lo > 1e-6:
        q = (lo + hi) / 2.0
        if (1.0 - q**src_half) / (1.0 - q) > dst_half:
            hi = q
        else:
            lo = q
    return q


def _source_offsets(src_len: int, dst_len: int) -> np.ndarray:
    """Positions of the src_len source offsets on the target's offset axis (symmetric, 0 at the centre)."""
    ratio = _progression_ratio(src_len // 2, dst_len // 2)
    dis = np.cumsum([1.0] + [ratio ** (i + 1) for i in range(src_len // 2 - 1)])
    return np.concatenate([-dis[::-1], [0.0], dis])


def resample_beit_table(table: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int]) -> torch.Tensor:
    """BEiT's geometric-progression bicubic resampling of a relative position bias table.

    Args:
        table: ((2h - 1)(2w - 1) + 3, heads) for `src_grid` (h, w); the last 3 rows (cls) are kept.
        src_grid, dst_grid: token grids the table is made for / wanted for.
    Returns:
        ((2h' - 1)(2w' - 1) + 3, heads) for `dst_grid`, same dtype.
    """
    if tuple(src_grid) == tuple(dst_grid):
        return table
    sh, sw = 2 * src_grid[0] - 1, 2 * src_grid[1] - 1
    dh, dw = 2 * dst_grid[0] - 1, 2 * dst_grid[1] - 1
    if table.shape[0] != sh * sw + BEIT_EXTRA_ROWS:
        raise ValueError(f"table has {table.shape[0]} rows, a {src_grid} grid needs {sh * sw + BEIT_EXTRA_ROWS}")
    ys, xs = _source_offsets(sh, dh), _source_offsets(sw, dw)
    ty, tx = np.arange(-(dh // 2), dh // 2 + 1, dtype=np.float64), np.arange(-(dw // 2), dw // 2 + 1, dtype=np.float64)
    patch = table[: sh * sw].double().numpy().reshape(sh, sw, -1)
    # kx = ky = 3, s = 0: the interpolating bicubic spline (what BEiT's interp2d(kind="cubic") fits);
    # tables of tiny grids (under 4 offsets) get the highest degree they allow.
    k_rows, k_cols = min(3, sh - 1), min(3, sw - 1)
    heads = [
        RectBivariateSpline(ys, xs, patch[..., i], kx=k_rows, ky=k_cols, s=0)(ty, tx) for i in range(patch.shape[-1])
    ]
    new = torch.from_numpy(np.stack(heads, axis=-1).reshape(dh * dw, -1)).to(table.dtype)
    return torch.cat([new, table[sh * sw :]], dim=0)


def _square_grid(rows: int) -> tuple[int, int]:
    side = (int(round((rows - BEIT_EXTRA_ROWS) ** 0.5)) + 1) // 2
    if beit_table_size((side, side)) != rows:
        raise ValueError(f"a BEiT relative position table with {rows} rows is not made for a square grid")
    return side, side


def keeps_beit_rel_pos(encoder: torch.nn.Module, key: str) -> bool:
    """True when `key` is BEiT relative-position state that `encoder` uses (instead of dropping it)."""
    return getattr(encoder, "rel_pos", "none") == "beit" and key.endswith(
        ("relative_position_bias_table", "relative_position_index")
    )


def convert_beit_rel_pos(state: dict[str, torch.Tensor], encoder: torch.nn.Module, notes: list[str]) -> dict[str, torch.Tensor]:
    """Give every block of a rel_pos="beit" encoder its table from a BEiT state dict (timm names).

    A shared table is copied into each block (as BEiT's fine-tuning does); `relative_position_index`
    buffers are dropped (the encoder computes its own); tables are resampled to each block's grid.
    Does nothing when the encoder has no BEiT tables. `notes` receives one line for the load report.
    """
    if getattr(encoder, "rel_pos", "none") != "beit":
        return state
    state = {k: v for k, v in state.items() if not k.endswith("relative_position_index")}
    shared = state.pop(_SHARED, None)
    if shared is not None:
        for i in range(len(encoder.blocks)):
            state.setdefault(f"blocks.{i}.attn.relative_position_bias_table", shared.clone())
    resized = set()
    for k in list(state):
        m = _BLOCK_TABLE.match(k)
        if m is None or int(m.group(1)) >= len(encoder.blocks):
            continue
        attn = encoder.blocks[int(m.group(1))].attn
        src, dst = _square_grid(state[k].shape[0]), attn.rel_pos_grid
        state[k] = resample_beit_table(state[k], src, dst)
        if src != tuple(dst):
            resized.add(f"{src[0]}x{src[1]} -> {dst[0]}x{dst[1]}")
    if shared is not None or resized:
        notes.append(
            "BEiT relative position bias loaded (relative_position_index recomputed by the encoder)"
            + (" (shared table copied into every block)" if shared is not None else "")
            + (f", resampled {', '.join(sorted(resized))} on BEiT's geometric progression" if resized else "")
        )
    return state
