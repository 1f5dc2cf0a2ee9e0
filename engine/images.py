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

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import simplejpeg
import torch
from PIL import Image, ImageFile

__all__ = ["UnreadableImageError", "decode_rgb", "decode_rgb_tensor", "read_rgb", "read_size", "to_rgb_array"]

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


def _check_truncation_policy() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone (a library, a notebook) switched PIL to decoding truncated files partially.
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True, so truncated images would be decoded "
            "partially and trained on; set it back to False"
        )


def _reason(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def decode_rgb(
    source: str | os.PathLike | BinaryIO,
    want: Callable[[int, int], tuple[int, int] | None] | None = None,
    name: str | None = None,
) -> tuple[Image.Image, float]:
    """Decode ``source`` (a path or a binary file object) -> (RGB PIL image, scale).

    ``want(width, height)`` is called once with the stored size (from the header, before any pixel is
    decoded) and returns the smallest decoded (w, h) the caller needs, or None for the full size. A
    JPEG is then decoded at 1/2, 1/4 or 1/8 of its size by libjpeg's DCT scaling (PIL's ``draft``),
    the largest factor that keeps both sides >= that size; other formats decode in full. ``scale``
    is the factor used (1, 2, 4 or 8): pixel (x, y) of the stored image is at (x / scale, y / scale)
    in the result. ``name`` names a file object in errors.

    Raises:
        UnreadableImageError: the file is missing, truncated, not an image or of an unsupported mode.
    """
    _check_truncation_policy()
    label = name if name is not None else str(source)
    try:
        im = Image.open(source)
    except Exception as e:
        raise UnreadableImageError(label, _reason(e)) from e
    wanted = want(*im.size) if want is not None else None  # the caller's code: its errors are its own
    try:
        scale = 1.0
        if wanted is not None and im.format == "JPEG":
            stored_width = im.size[0]
            drafted = im.draft(None, (max(1, wanted[0]), max(1, wanted[1])))
            if drafted is not None:  # its box is the stored image in decoded pixels: (0, 0, W / s, H / s)
                scale = stored_width / drafted[1][2]
        im.load()  # the full decode happens here (and a path's file is closed): truncation raises here
        if im.mode != "RGB":
            im = Image.fromarray(to_rgb_array(im))
        return im, scale
    except Exception as e:  # any decoder failure means this one file is unreadable
        im.close()
        raise UnreadableImageError(label, _reason(e)) from e


def _draft_factor(wanted: tuple[int, int] | None, size: tuple[int, int]) -> int:
    """The factor PIL's ``draft`` decodes a ``size`` JPEG at for ``wanted``: the largest of 8, 4, 2, 1
    not above min(W // w, H // h) (its own rule, so both decoders give the same pixels)."""
    if wanted is None:
        return 1
    fit = min(size[0] // max(1, wanted[0]), size[1] // max(1, wanted[1]))
    return next(f for f in (8, 4, 2, 1) if f <= max(fit, 1))


# JPEG colour spaces the libjpeg-turbo fast path turns into RGB with PIL's pixels; CMYK / YCCK go
# through PIL (its inverted-Adobe handling differs by a grey level).
_FAST_JPEG = ("YCbCr", "Gray", "RGB")


def _decode_jpeg_fast(
    data: bytes, wanted: tuple[int, int] | None, size: tuple[int, int]
) -> tuple[torch.Tensor, float] | None:
    """libjpeg-turbo (``simplejpeg``) decode at PIL's draft factor -> ((3, H, W) uint8, scale), or None
    when libjpeg reports anything (corrupt bytes, truncation): then PIL decides, as for every file."""
    factor = _draft_factor(wanted, size)
    try:
        # decoded size ceil(W / f) x ceil(H / f) selects exactly 1 / f among libjpeg's M/8 factors
        pixels = simplejpeg.decode_jpeg(
            data, "RGB", min_height=-(-size[1] // factor), min_width=-(-size[0] // factor)
        )
    except ValueError:
        return None
    return torch.from_numpy(pixels).permute(2, 0, 1), float(factor)  # DCT scaling maps x to x / f exactly


def decode_rgb_tensor(
    source: str | os.PathLike | BinaryIO,
    want: Callable[[int, int], tuple[int, int] | None] | None = None,
    name: str | None = None,
) -> tuple[torch.Tensor, float]:
    """:func:`decode_rgb` as a (3, H, W) uint8 tensor (channels-last memory), and the scale.

    A JPEG in YCbCr, RGB or gray goes through libjpeg-turbo directly (``simplejpeg``: its header
    without PIL, the full or 1/2, 1/4, 1/8 decode straight into an array, the same pixels as PIL's
    and ``draft``'s; on 640x480 photos 12% faster than ``torchvision.io.decode_jpeg``, 25% than
    PIL). Any other file, and a JPEG libjpeg warns about (PIL then decodes it or names why not),
    goes through :func:`decode_rgb`. ``want`` is called exactly once.
    """
    label = name if name is not None else str(source)
    _check_truncation_policy()
    try:
        data = Path(source).read_bytes() if isinstance(source, (str, os.PathLike)) else source.read()
    except Exception as e:
        raise UnreadableImageError(label, _reason(e)) from e
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:  # not a JPEG (or a broken one): PIL's header and decoder
        colorspace = None
    if colorspace in _FAST_JPEG:
        wanted = want(width, height) if want is not None else None
        decoded = _decode_jpeg_fast(data, wanted, (width, height))
        if decoded is not None:
            return decoded
        want = (lambda w, h: wanted) if want is not None else None  # the box is drawn already
    image, scale = decode_rgb(io.BytesIO(data), want, label)
    pixels = np.asarray(image)  # read-only; nothing writes to it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the given NumPy array is not writable"
        return torch.from_numpy(pixels).permute(2, 0, 1), scale


def read_rgb(source: str | os.PathLike | BinaryIO, name: str | None = None) -> np.ndarray:
    """Decode ``source`` (a path or a binary file object) fully -> (H, W, 3) uint8 RGB.

    Raises:
        UnreadableImageError: the file is missing, truncated, not an image or of an unsupported mode.
    """
    _check_truncation_policy()
    label = name if name is not None else str(source)
    try:
        with Image.open(source) as im:
            im.load()  # the full decode happens here: truncation surfaces inside the try
            return to_rgb_array(im)
    except Exception as e:  # any decoder failure means this one file is unreadable
        raise UnreadableImageError(label, _reason(e)) from e


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
