"""Training augmentation for instance detection, on `torchvision.transforms.v2` + `tv_tensors`.

A sample is `(image, target)` with `image` a `tv_tensors.Image` (3, H, W) uint8 and `target` a dict
holding `boxes` (`tv_tensors.BoundingBoxes`, XYXY, N x 4), `masks` (`tv_tensors.Mask`, N x H x W)
and `labels` (N,). Every geometric transform moves the image, the boxes and the masks together;
`SanitizeBoundingBoxes` at the end drops instances that a crop left with no area (and their
labels and masks).

Policies (`DataConfig.policy`):

- `multiscale_crop` (Liu et al. 3x, the paper's recipe; DETR-style): flip, then with p = 0.5 a
  multi-scale resize (short side one of 480..800 step 32, long side <= 1333), otherwise resize
  (short side one of 400 / 500 / 600) -> random crop with height and width each drawn from
  384..600 -> the multi-scale resize.
- `lsj` (ViTDet): flip, resize to scale U(0.1, 2.0) x 1024 (the image fits a 1024 square at scale
  1), a fixed 1024 x 1024 crop at a random position, padded at the right / bottom when smaller.
- `fixed`: flip and a single short-side size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.transforms.v2._utils import query_size

from .config import DataConfig

__all__ = ["RandomSizeCrop", "FixedSizeCrop", "build_train_transforms", "multiscale_crop", "large_scale_jitter"]

# Pad value of LSJ's fixed-size crop: the ImageNet mean colour, i.e. 0 after normalisation, which
# is also what the model's batching pads with.
_MEAN_PIXEL = (124, 116, 104)


class RandomSizeCrop(v2.Transform):
    """Crop a rectangle whose height and width are drawn uniformly from [min_size, max_size].

    Sides are capped at the image's own (mmdet's `RandomCrop(crop_type="absolute_range")`); the
    position is uniform. Boxes are clipped to the crop and masks cropped with the image.
    """

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"need 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size = min_size
        self.max_size = max_size

    def _side(self, length: int) -> int:
        lo, hi = min(length, self.min_size), min(length, self.max_size)
        return int(torch.randint(lo, hi + 1, ()).item())

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = query_size(flat_inputs)
        ch, cw = self._side(h), self._side(w)
        top = int(torch.randint(0, h - ch + 1, ()).item())
        left = int(torch.randint(0, w - cw + 1, ()).item())
        return dict(top=top, left=left, height=ch, width=cw)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(F.crop, inpt, **params)


class FixedSizeCrop(v2.Transform):
    """Crop to at most `size` x `size` at a random position, then pad right / bottom to exactly that.

    Images are padded with `fill` (the mean colour), masks with 0; boxes are unchanged by the pad.
    """

    def __init__(self, size: int, fill: Sequence[int] = _MEAN_PIXEL) -> None:
        super().__init__()
        self.size = size
        self.fill = list(fill)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = query_size(flat_inputs)
        ch, cw = min(h, self.size), min(w, self.size)
        top = int(torch.randint(0, h - ch + 1, ()).item())
        left = int(torch.randint(0, w - cw + 1, ()).item())
        return dict(top=top, left=left, height=ch, width=cw, pad=[0, 0, self.size - cw, self.size - ch])

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = self._call_kernel(
            F.crop, inpt, top=params["top"], left=params["left"], height=params["height"], width=params["width"]
        )
        if any(params["pad"]):
            fill = self.fill if isinstance(inpt, tv_tensors.Image) else 0
            out = self._call_kernel(F.pad, out, padding=params["pad"], fill=fill)
        return out


def multiscale_crop(
    sizes: Sequence[int],
    max_size: int,
    crop_pre_sizes: Sequence[int],
    crop_size: tuple[int, int],
) -> v2.Transform:
    """The 3x recipe's resize policy: multi-scale, or resize -> random crop -> multi-scale (p = 0.5 each)."""
    scale = v2.RandomShortestSize(list(sizes), max_size=max_size, antialias=True)
    crop_branch = v2.Compose(
        [
            v2.RandomShortestSize(list(crop_pre_sizes), max_size=max_size, antialias=True),
            RandomSizeCrop(*crop_size),
            v2.RandomShortestSize(list(sizes), max_size=max_size, antialias=True),
        ]
    )
    return v2.RandomChoice([scale, crop_branch], p=[0.5, 0.5])


def large_scale_jitter(size: int, scale_range: tuple[float, float]) -> v2.Transform:
    """ViTDet's LSJ: random rescale of the `size` square fit, then a fixed `size` crop with padding."""
    return v2.Compose(
        [
            v2.ScaleJitter(target_size=(size, size), scale_range=tuple(scale_range), antialias=True),
            FixedSizeCrop(size),
        ]
    )


def build_train_transforms(cfg: DataConfig) -> v2.Compose:
    """The training pipeline of `cfg.policy`: flip, resize / crop policy, then box sanitation."""
    if cfg.policy == "multiscale_crop":
        geometry = multiscale_crop(cfg.train_sizes, cfg.max_size, cfg.crop_pre_sizes, cfg.crop_size)
    elif cfg.policy == "lsj":
        geometry = large_scale_jitter(cfg.lsj_size, cfg.lsj_scale)
    elif cfg.policy == "fixed":
        geometry = v2.RandomShortestSize([cfg.train_sizes[-1]], max_size=cfg.max_size, antialias=True)
    else:
        raise ValueError(f"data.policy must be multiscale_crop, lsj or fixed, got {cfg.policy!r}")
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(p=0.5),
            geometry,
            # Crops clip boxes to the image; instances cut away entirely (or to < 1 px) go, with
            # their labels and masks.
            v2.SanitizeBoundingBoxes(min_size=1.0),
        ]
    )
