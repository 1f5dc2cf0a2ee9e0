"""Test-time inference: whole-image and sliding-window (mmseg's `slide_inference`), then back to the
original label resolution.

Sliding windows: for an H x W input, crop c and stride s, the window rows start at
`y1 = min(i * s, max(H - c, 0))` for i = 0 .. max(H - c + s - 1, 0) // s (the last window is
shifted back so it ends at the border; same for columns); a window is `min(c, H) x min(c, W)`.
All windows have the same size, so they are run as batches; logits are summed into the full map
and divided by a count map of how many windows covered each pixel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis (mmseg's grid, last window flush with the end)."""
    if crop <= 0 or stride <= 0:
        raise ValueError(f"crop and stride must be positive, got crop={crop}, stride={stride}")
    n = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, size) - crop, 0) for i in range(n)]


def slide_inference(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    num_classes: int,
    crop: int | tuple[int, int],
    stride: int | tuple[int, int],
    batch_windows: int = 8,
    return_count: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Average the logits of overlapping windows.

    Args:
        logits_fn: (N, 3, h, w) -> (N, K, h, w) logits at the input resolution (the model).
        images: (B, 3, H, W).
        num_classes: K.
        crop, stride: window size and step, (h, w) or one int for both.
        batch_windows: windows per forward pass (per image in the batch).
        return_count: also return the (H, W) count map.
    Returns:
        logits (B, K, H, W) float32 [and counts (H, W)].
    """
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    B, _, H, W = images.shape
    wins = [(y, x) for y in window_starts(H, ch, sh) for x in window_starts(W, cw, sw)]
    h, w = min(ch, H), min(cw, W)
    logits = images.new_zeros((B, num_classes, H, W), dtype=torch.float32)
    count = images.new_zeros((H, W), dtype=torch.float32)
    for start in range(0, len(wins), batch_windows):
        chunk = wins[start : start + batch_windows]
        # (n, B, 3, h, w) -> (n*B, 3, h, w): one forward for n windows of every image.
        crops = torch.stack([images[..., y : y + h, x : x + w] for y, x in chunk]).flatten(0, 1)
        out = logits_fn(crops).float().unflatten(0, (len(chunk), B))
        for (y, x), o in zip(chunk, out):
            logits[..., y : y + h, x : x + w] += o
            count[y : y + h, x : x + w] += 1
    logits = logits / count
    return (logits, count) if return_count else logits


def predict_logits(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    num_classes: int,
    mode: str = "slide",
    crop: int | tuple[int, int] = 512,
    stride: int | tuple[int, int] = 341,
    out_size: tuple[int, int] | None = None,
    batch_windows: int = 8,
) -> torch.Tensor:
    """Logits for `images` (B, 3, H, W) by `mode` ("slide" or "whole"), resized bilinearly
    (align_corners=False) to `out_size` (the original label size) when given -> (B, K, h_out, w_out)."""
    if mode == "slide":
        logits = slide_inference(logits_fn, images, num_classes, crop, stride, batch_windows)
    elif mode == "whole":
        logits = logits_fn(images).float()
    else:
        raise ValueError(f"eval mode must be 'slide' or 'whole', got {mode!r}")
    if out_size is not None and tuple(out_size) != tuple(logits.shape[-2:]):
        logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)
    return logits
