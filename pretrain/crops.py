"""Random resized crops that decode only as many pixels as the crop needs.

`DraftCropTransform(size, scale)` maps an image source (a path or a binary file object) to a uint8
(3, size, size) tensor: the crop box is drawn by torchvision's `RandomResizedCrop.get_params` on the
stored image's size (read from the header), so the crop distribution is torchvision's; then a JPEG is
decoded at 1/2, 1/4 or 1/8 of its size (libjpeg DCT scaling, `engine.images.decode_rgb_tensor`)
when the box still covers at least `size` x `size` decoded pixels (in full otherwise; libjpeg-turbo
either way), and the box, mapped into decoded pixels, is resized to `size` by torch's uint8
antialiased bicubic (PIL's filter, to within one grey level, and about 2.5x faster than PIL's on
one thread). Then the horizontal flip and the optional colour
augmentations run on the small uint8 tensor, which is the output: normalisation happens on the
device (`pretrain.data.normalize_images`), so a batch crosses the bus as uint8.

Random numbers come from the torch RNG the caller seeded (`pretrain.data.UnlabeledImages`), in the
order box, flip, colour.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import BinaryIO

import torch
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from engine.images import decode_rgb_tensor

__all__ = ["DraftCropTransform", "draft_want", "resized_crop"]

Box = tuple[int, int, int, int]  # (top, left, height, width) in stored-image pixels, torchvision's order


def _shape_only(width: int, height: int) -> torch.Tensor:
    """A (3, height, width) tensor without memory: all `RandomResizedCrop.get_params` reads is its shape."""
    return torch.empty(1, 1, 1, dtype=torch.uint8).expand(3, height, width)


def draft_want(box: Box, size: int, width: int, height: int) -> tuple[int, int]:
    """The smallest decoded (w, h) of a (width, height) image that keeps `box` >= size x size pixels.

    A decode at 1/s gives the box (box_w / s, box_h / s) pixels; s <= min(box_w, box_h) / size keeps
    both >= size. PIL picks s = largest of 8, 4, 2, 1 with s <= min(width // w, height // h), and
    w = ceil(width * size / box_w) makes width // w <= box_w / size.
    """
    _, _, h, w = box
    return math.ceil(width * size / w), math.ceil(height * size / h)


def resized_crop(
    source: str | os.PathLike | BinaryIO,
    draw_box: Callable[[int, int], Box],
    size: int,
    draft: bool = True,
    name: str | None = None,
) -> tuple[torch.Tensor, Box, float]:
    """Decode `source`, crop the box `draw_box(width, height)` and resize it to (size, size).

    The box is drawn on the stored size; in an image decoded at 1/s its edges are rounded to the
    nearest decoded pixel (within s / 2 stored pixels of the drawn box).
    Returns (uint8 (3, size, size), the box in stored pixels, the decode scale s used).
    Raises `engine.images.UnreadableImageError` for a broken file.
    """
    drawn: list[Box] = []

    def want(width: int, height: int) -> tuple[int, int] | None:
        drawn.append(draw_box(width, height))
        return draft_want(drawn[0], size, width, height) if draft else None

    image, scale = decode_rgb_tensor(source, want, name)
    top, left, h, w = drawn[0]
    y0, x0 = round(top / scale), round(left / scale)
    y1, x1 = max(y0 + 1, round((top + h) / scale)), max(x0 + 1, round((left + w) / scale))
    crop = image[:, y0:y1, x0:x1]
    # torch's uint8 bicubic with antialias equals PIL's bicubic resize to within one grey level.
    out = TF.resize(crop, [size, size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return out, drawn[0], scale


class DraftCropTransform:
    """Image source -> uint8 (3, size, size): RandomResizedCrop (decoded at reduced size) + flip + `extra`.

    Args:
        size: output side.
        scale: area range of the crop (torchvision's `scale`); ratio is torchvision's 3/4-4/3.
        extra: uint8 tensor -> uint8 tensor augmentations after the flip (colour jitter, blur...).
        draft: decode JPEGs at reduced size when the crop allows it (False: always the full image).
    """

    def __init__(
        self, size: int, scale: tuple[float, float], extra: Callable | None = None, draft: bool = True
    ) -> None:
        self.size = size
        self.scale = tuple(scale)
        self.ratio = (3.0 / 4.0, 4.0 / 3.0)
        self.extra = extra
        self.draft = draft

    def draw_box(self, width: int, height: int) -> Box:
        """torchvision's crop box (top, left, h, w) for a (width, height) image, from the torch RNG."""
        return tuple(RandomResizedCrop.get_params(_shape_only(width, height), self.scale, self.ratio))

    def __call__(self, source: str | os.PathLike | BinaryIO, name: str | None = None) -> torch.Tensor:
        image, _, _ = resized_crop(source, self.draw_box, self.size, self.draft, name)
        if torch.rand(1) < 0.5:  # torchvision's RandomHorizontalFlip(0.5) draw
            image = image.flip(-1)
        if self.extra is not None:
            image = self.extra(image)
        return image.contiguous()
