"""DINO's multi-crop views: two global crops and several small local crops of one image.

Each view is a RandomResizedCrop (bicubic) + horizontal flip + the BYOL colour augmentations
(colour jitter 0.4 / 0.4 / 0.2 / 0.1 with p 0.8, grayscale p 0.2), then a Gaussian blur with
p 1.0 (global 1), 0.1 (global 2) or 0.5 (locals) and, on global 2 only, solarisation with p 0.2
(DINO's ``DataAugmentationDINO``; the blur kernel is ~10% of the side, sigma in [0.1, 2]).

All views of a sample are drawn from the torch RNG that `pretrain.data.UnlabeledImages` seeds
from (seed, epoch, index), so they are as reproducible as the single-view pipelines.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import BinaryIO

import torch
from torchvision.transforms import InterpolationMode, v2

from engine.images import decode_rgb

__all__ = ["MultiCropTransform"]


def _view(size: int, scale: tuple[float, float], blur_p: float, solarize_p: float) -> v2.Compose:
    """PIL image -> one uint8 (3, size, size) view."""
    blur_kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # odd
    ops: list[Callable] = [
        v2.RandomResizedCrop(size, scale=scale, interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(blur_kernel, sigma=(0.1, 2.0))], p=blur_p),
    ]
    if solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=128, p=solarize_p))  # on the uint8 PIL image
    ops.append(v2.PILToTensor())  # uint8; normalised on the device (`pretrain.data.normalize_images`)
    return v2.Compose(ops)


class MultiCropTransform:
    """Image source (path or file object) -> ``{"global_crops": (2, 3, G, G), "local_crops": (L, 3, S, S)}``
    uint8. The image is decoded once, in full (its crops differ in size; the global ones cover
    40-100% of it, which leaves a 640x480 photo no DCT reduction at 224).

    Args:
        global_size: side of the global crops (the run's img_size, 224 in the paper).
        global_scale: area range of the global crops ((0.4, 1): DINO's default with local crops).
        local_number: local crops L (10 in the paper; 0 disables them).
        local_size: side of the local crops (96).
        local_scale: area range of the local crops ((0.05, 0.4)).
    """

    def __init__(
        self,
        global_size: int = 224,
        global_scale: tuple[float, float] = (0.4, 1.0),
        local_number: int = 10,
        local_size: int = 96,
        local_scale: tuple[float, float] = (0.05, 0.4),
    ) -> None:
        self.global_views = [
            _view(global_size, global_scale, blur_p=1.0, solarize_p=0.0),
            _view(global_size, global_scale, blur_p=0.1, solarize_p=0.2),
        ]
        self.local_view = _view(local_size, local_scale, blur_p=0.5, solarize_p=0.0)
        self.local_number = local_number
        self.local_size = local_size

    def __call__(self, source: str | os.PathLike | BinaryIO, name: str | None = None) -> dict[str, torch.Tensor]:
        image, _ = decode_rgb(source, name=name)
        globals_ = torch.stack([t(image) for t in self.global_views])
        if self.local_number == 0:
            locals_ = globals_.new_zeros(0, 3, self.local_size, self.local_size)
        else:
            locals_ = torch.stack([self.local_view(image) for _ in range(self.local_number)])
        return {"global_crops": globals_, "local_crops": locals_}
