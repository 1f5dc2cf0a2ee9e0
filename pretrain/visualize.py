"""Pictures of what pretraining does: SplitMask's split of an image into its two patch subsets."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def split_views(image: torch.Tensor, in_a: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What each branch sees: the image with the other subset's patches greyed out.

    Args:
        image: (3, H, W) in [0, 1].
        in_a: (h, w) bool, True where the patch belongs to subset A.
    Returns:
        view_a, view_b: (3, H, W) each.
    """
    pixel_a = in_a.repeat_interleave(patch_size, 0).repeat_interleave(patch_size, 1)  # (H, W)
    grey = torch.full_like(image, 0.5)
    return torch.where(pixel_a, image, grey), torch.where(pixel_a, grey, image)


def save_split_figure(image: torch.Tensor, in_a: torch.Tensor, patch_size: int, out_png: str | Path) -> Path:
    """Image | subset A | subset B, side by side, saved as PNG."""
    view_a, view_b = split_views(image, in_a, patch_size)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4), dpi=110)
    n = int(in_a.numel())
    titles = ["image", f"subset A ({int(in_a.sum())}/{n} patches)", f"subset B ({n - int(in_a.sum())}/{n})"]
    for ax, img, title in zip(axes, (image, view_a, view_b), titles):
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle("SplitMask: each branch encodes one subset and inpaints the other", fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
