"""One image decoder for every loader: any common file -> RGB uint8, or one error class.

``read_rgb(path)`` returns an (H, W, 3) uint8 array whatever the file holds:

- 8-bit RGB, gray (``L``, ``1``), ``LA``, ``RGBA`` and palette (``P``, also with transparency):
  PIL's own conversion; alpha is dropped (the colour under it is kept), as torchvision's
  ``decode_image(mode=RGB)`` does;
- 16-bit gray (``I;16*``) and 32-bit integer gray (``I``, how some PIL versions open 16-bit PNGs):
  scaled by 255 / 65535 and rounded (PIL's own ``convert`` clips them at 255, which turns a
  16-bit photo almost white); 16-bit RGB PNGs already open as 8-bit RGB (PIL keeps the high byte);
- float gray (``F``): values in [0, 1] are scaled by 255, anything else is clipped to [0, 255];
- ``CMYK`` (also Adobe's inverted JPEGs, which PIL recognises) and ``YCbCr``: PIL's conversion.

EXIF orientation is not applied, so pixels match the coordinates of annotations made on the stored
image (COCO, LVIS, ADE20k).

Truncated and unreadable files raise :class:`UnreadableImageError`; PIL's
``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (the default) so that a truncated JPEG or PNG
fails here instead of decoding the missing part as grey.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

__all__ = ["UnreadableImageError", "read_rgb", "read_size", "to_rgb_array"]

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class UnreadableImageError(OSError):
    """An image file could not be decoded (missing, truncated, not an image, unknown mode).

    Attributes:
        path: the file.
        reason: what went wrong, one line.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self) -> tuple:  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason))


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """A loaded PIL image of any supported mode -> (H, W, 3) uint8 RGB (see the module doc)."""
    if im.mode in _SIXTEEN_BIT:
        gray = np.asarray(im).astype(np.float64)
        gray = np.rint(np.clip(gray, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode == "F":
        gray = np.asarray(im, dtype=np.float64)
        if gray.size and np.nanmin(gray) >= 0.0 and np.nanmax(gray) <= 1.0:
            gray = gray * 255.0
        gray = np.rint(np.clip(np.nan_to_num(gray), 0, 255)).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # PIL refuses / warns when converting such palettes straight to RGB
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.uint8).copy()  # writable, owns its memory


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` fully -> (H, W, 3) uint8 RGB.

    Raises:
        UnreadableImageError: the file is missing, truncated, not an image or of an unsupported mode.
    """
    path = Path(path)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone (a library, a notebook) switched PIL to decoding truncated files partially.
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated images would be decoded "
            "partially and trained on; set it back to False"
        )
    try:
        with Image.open(path) as im:
            im.load()  # the full decode happens here: truncation surfaces inside the try
            return to_rgb_array(im)
    except Exception as e:  # any decoder failure means this one file is unreadable
        raise UnreadableImageError(path, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def read_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) from the file header only (no pixel decode), for fast start-up scans.

    Raises:
        UnreadableImageError: the header cannot be read.
    """
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:
        raise UnreadableImageError(path, f"{type(e).__name__}: {e}") from e
