"""Drawing primitives for the demo sets: seeded per-image RNG streams, colours, noise, shading, textures.

All images are float32 RGB in [0, 255], vectorised over pixels.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np

# Bump when the drawn content or the layout changes: existing caches then regenerate.
GENERATOR_VERSION = 2  # 2: bigger, fewer COCO objects; bigger, more ADE balls and boxes
IMAGE_SIDES = (128, 144, 160, 176, 192)  # every image side is one of these (non-square allowed)
OBJECT_TEXTURES = ("solid", "stripes", "checker", "noise")
JPEG_QUALITY = 95
_SPLIT_CODES = {"coco_train": 0, "coco_val": 1, "ade_train": 2, "ade_val": 3}


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """One independent stream per image: the first N images do not depend on how many follow."""
    return np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_CODES[split], index]))


def image_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width), each side drawn from IMAGE_SIDES."""
    h, w = rng.choice(IMAGE_SIDES, size=2)
    return int(h), int(w)


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] -> (3,) RGB float32 in [0, 255]."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """(h, w) float32 band-limited noise, std ~0.6-1: a coarse Gaussian grid upsampled bicubically."""
    gh, gw = max(2, int(np.ceil(h / cell)) + 1), max(2, int(np.ceil(w / cell)) + 1)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) float32 row and column coordinates."""
    yy, xx = np.mgrid[0:h, 0:w]
    return yy.astype(np.float32), xx.astype(np.float32)


def linear_shading(rng: np.random.Generator, h: int, w: int, strength: float) -> np.ndarray:
    """(h, w, 1) multiplicative light gradient in [1 - strength, 1 + strength] at a random angle."""
    yy, xx = pixel_grid(h, w)
    phi = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (xx / max(w - 1, 1) - 0.5) * np.cos(phi) + (yy / max(h - 1, 1) - 0.5) * np.sin(phi)
    return (1.0 + 2.0 * strength * ramp)[..., None]


def object_texture(
    rng: np.random.Generator, kind: str, h: int, w: int, c1: np.ndarray, c2: np.ndarray
) -> np.ndarray:
    """(h, w, 3) texture of one object: colour c1 (and c2 for two-tone textures), light shading."""
    yy, xx = pixel_grid(h, w)
    theta = rng.uniform(0.0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    if kind == "solid":
        tex = np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    elif kind == "stripes":
        period = rng.uniform(4.0, 10.0)
        on = np.mod(u / period, 1.0) < rng.uniform(0.35, 0.65)
        tex = np.where(on[..., None], c1, c2)
    elif kind == "checker":
        cell = rng.uniform(3.0, 8.0)
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        on = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0
        tex = np.where(on[..., None], c1, c2)
    elif kind == "noise":
        blend = 1.0 / (1.0 + np.exp(-3.0 * smooth_noise(rng, h, w, rng.uniform(2.0, 5.0))))
        tex = c1 * blend[..., None] + c2 * (1.0 - blend[..., None])
    else:
        raise ValueError(f"unknown texture {kind!r}; expected one of {OBJECT_TEXTURES}")
    return (tex * linear_shading(rng, h, w, rng.uniform(0.0, 0.15))).astype(np.float32)


def coco_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) muted two-colour gradient + blotchy low-frequency noise + a few faint lines."""
    yy, xx = pixel_grid(h, w)
    c1 = hsv(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.85))
    c2 = hsv(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.3, 0.85))
    phi = rng.uniform(0.0, 2.0 * np.pi)
    t = (xx / w - 0.5) * np.cos(phi) + (yy / h - 0.5) * np.sin(phi) + 0.5
    t = np.clip(t, 0.0, 1.0)[..., None]
    img = c1 * (1.0 - t) + c2 * t
    img += rng.uniform(8.0, 22.0) * smooth_noise(rng, h, w, rng.uniform(12.0, 32.0))[..., None]
    img += rng.uniform(3.0, 8.0) * smooth_noise(rng, h, w, 3.0)[..., None]
    img = np.ascontiguousarray(img, dtype=np.float32)
    for _ in range(int(rng.integers(0, 4))):  # clutter that is not an object
        p0 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        shade = tuple(float(c) for c in np.clip(img[p0[1], p0[0]] + rng.uniform(-30.0, 30.0), 0, 255))
        cv2.line(img, p0, p1, shade, int(rng.integers(1, 3)), lineType=cv2.LINE_AA)
    return img


def finish(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Sensor noise and quantisation: (h, w, 3) float -> uint8."""
    img = img + rng.normal(0.0, rng.uniform(2.0, 5.0), size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def write_jpeg(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(
        str(path), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    ):
        raise OSError(f"could not write {path}")
