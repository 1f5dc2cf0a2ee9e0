"""Images <-> flattened patch vectors, in MAE's (p, q, c) order; shared by MAE's pixel target and the tokenizers."""

from __future__ import annotations

import torch


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into non-overlapping square patches, flattened in (p, q, c) order.

    Args:
        images: (B, C, H, W), H and W multiples of `patch_size`.
    Returns:
        (B, h*w, p*p*C), patches row-major over the grid; within a patch row p, column q, channel c.
    """
    B, C, H, W = images.shape
    p = patch_size
    if H % p or W % p:
        raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {p}")
    h, w = H // p, W // p
    x = images.reshape(B, C, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(B, h * w, p * p * C)


def unpatchify(
    patches: torch.Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3
) -> torch.Tensor:
    """Inverse of `patchify`: (B, h*w, p*p*C) -> (B, C, h*p, w*p)."""
    B = patches.shape[0]
    h, w = grid
    p = patch_size
    x = patches.reshape(B, h, w, p, p, channels)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(B, channels, h * p, w * p)
