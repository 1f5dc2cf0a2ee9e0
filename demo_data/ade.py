"""The ADE20k-layout demo set: stuff and thing classes with their own texture families, label 0 = other."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from demo_data.drawing import (
    finish,
    hsv,
    image_rng,
    image_size,
    linear_shading,
    object_texture,
    pixel_grid,
    smooth_noise,
    write_jpeg,
)

# ADE convention: label 0 = other / ignore, label i (1-based) = DEMO_ADE_CLASSES[i - 1].
DEMO_ADE_CLASSES: tuple[str, ...] = ("sky", "building", "tree", "grass", "road", "water", "ball", "box")
# Things: counts per image as numpy's integers(lo, hi) bounds, sizes as (pixels, fraction of the short
# side). Generator version 1 drew 0-3 balls of radius 4 px..0.12 and 0-2 boxes of side 8 px..0.25:
# 1-3 patches of a ViT/16 at 128 px, and UperNet kept both classes at 0 IoU at the demo's budget.
BALLS_PER_IMAGE, BALL_RADIUS = (1, 5), (6.0, 0.22)
BOXES_PER_IMAGE, BOX_SIDE = (1, 4), (12.0, 0.4)
_ADE = {name: i + 1 for i, name in enumerate(DEMO_ADE_CLASSES)}


def _ade_textures(rng: np.random.Generator, h: int, w: int) -> dict[str, Callable[[], np.ndarray]]:
    """Per-class texture makers for one image: each returns (h, w, 3) float32 over the full canvas.

    Colours are jittered per image inside each class's range; the texture family tells classes apart.
    """
    yy, xx = pixel_grid(h, w)

    def sky() -> np.ndarray:
        top = hsv(rng.uniform(0.53, 0.64), rng.uniform(0.05, 0.6), rng.uniform(0.7, 1.0))
        bottom = top * 0.5 + 0.5 * 255.0 * rng.uniform(0.8, 1.0)
        t = (yy / h)[..., None]
        cloud = np.clip(smooth_noise(rng, h, w, rng.uniform(16.0, 32.0)), 0.0, None)[..., None]
        base = top * (1 - t) + bottom * t
        return base + (245.0 - base) * np.clip(cloud * rng.uniform(0.3, 0.8), 0.0, 1.0)

    def building() -> np.ndarray:
        wall = hsv(rng.uniform(0.0, 0.12), rng.uniform(0.05, 0.45), rng.uniform(0.45, 0.8))
        window = hsv(rng.uniform(0.5, 0.65), rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.3))
        px, py = rng.uniform(6.0, 11.0), rng.uniform(7.0, 12.0)
        on = (np.mod(xx - rng.uniform(0, px), px) < 0.5 * px) & (
            np.mod(yy - rng.uniform(0, py), py) < 0.55 * py
        )
        return np.where(on[..., None], window, wall) * linear_shading(rng, h, w, 0.1)

    def tree() -> np.ndarray:
        leaf = hsv(rng.uniform(0.25, 0.38), rng.uniform(0.5, 0.9), rng.uniform(0.25, 0.5))
        return leaf * (1.0 + 0.45 * smooth_noise(rng, h, w, 3.0))[..., None]

    def grass() -> np.ndarray:
        blade = hsv(rng.uniform(0.17, 0.3), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.8))
        streaks = cv2.resize(rng.standard_normal((max(2, h // 6), w)).astype(np.float32), (w, h))
        fine = rng.standard_normal((h, w)).astype(np.float32)
        return blade * (1.0 + 0.15 * streaks + 0.1 * fine)[..., None]

    def road() -> np.ndarray:
        asphalt = hsv(rng.uniform(), rng.uniform(0.0, 0.08), rng.uniform(0.25, 0.45))
        fine = rng.standard_normal((h, w)).astype(np.float32)
        img = asphalt * (1.0 + 0.12 * fine)[..., None]
        # A dashed lane marking across the canvas; only the part inside the road region shows.
        theta = rng.uniform(-0.5, 0.5)
        d = (xx - rng.uniform(0.3, 0.7) * w) * np.cos(theta) + (yy - h) * np.sin(theta)
        along = -(xx - w / 2) * np.sin(theta) + yy * np.cos(theta)
        lane = (np.abs(d) < 1.5) & (np.mod(along, 12.0) < 7.0)
        return np.where(lane[..., None], np.float32(230.0), img)

    def water() -> np.ndarray:
        blue = hsv(rng.uniform(0.48, 0.62), rng.uniform(0.4, 0.85), rng.uniform(0.35, 0.7))
        period = rng.uniform(3.0, 6.0)
        ripple = np.sin(2 * np.pi * (yy / period + 0.6 * smooth_noise(rng, h, w, 10.0)))
        return blue * (1.0 + 0.18 * ripple)[..., None]

    return {"sky": sky, "building": building, "tree": tree, "grass": grass, "road": road, "water": water}


def _wooden_box(rng: np.random.Generator, h: int, w: int, base: float) -> tuple[np.ndarray, int, np.ndarray]:
    """A rotated box on the ground (below row `base`): (h, w) bool mask, its label, (h, w, 3) texture."""
    side = rng.uniform(BOX_SIDE[0], BOX_SIDE[1] * min(h, w))
    rect = (
        (float(rng.uniform(0, w)), float(rng.uniform(base, h))),
        (side, side * rng.uniform(0.6, 1.4)),
        float(rng.uniform(0, 90)),
    )
    corners = cv2.boxPoints(rect)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(corners).astype(np.int32)], 1)
    wood = hsv(rng.uniform(0.05, 0.12), rng.uniform(0.5, 0.85), rng.uniform(0.45, 0.85))
    texture = object_texture(rng, "stripes", h, w, wood, wood * 0.75)
    edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
    texture[edge] *= 0.5  # dark outline
    return mask.astype(bool), _ADE["box"], texture


def _ade_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One scene: (h, w, 3) uint8 RGB and (h, w) uint8 labels (0 = other, 1..K = DEMO_ADE_CLASSES)."""
    h, w = image_size(rng)
    yy, xx = pixel_grid(h, w)
    img = np.zeros((h, w, 3), np.float32)
    label = np.zeros((h, w), np.uint8)
    tex = _ade_textures(rng, h, w)

    def paint(mask: np.ndarray, cls: int, texture: np.ndarray) -> None:
        label[mask] = cls
        img[mask] = texture[mask]

    # Stuff: sky above a wavy horizon, the ground below split into 1-3 bands of grass / road / water.
    base = rng.uniform(0.3, 0.55) * h
    horizon = base + rng.uniform(0.0, 0.05) * h * np.sin(
        2 * np.pi * xx[0] / rng.uniform(40, 120) + rng.uniform(0, 6.3)
    )
    sky = yy < horizon[None, :]
    paint(sky, _ADE["sky"], tex["sky"]())
    ground_classes = rng.permutation(["grass", "road", "water"])[: int(rng.integers(1, 4))]
    phi = rng.uniform(0.0, np.pi)
    proj = xx * np.cos(phi) + yy * np.sin(phi) + 4.0 * smooth_noise(rng, h, w, 24.0)
    cuts = np.sort(rng.uniform(proj[~sky].min(), proj[~sky].max(), size=len(ground_classes) - 1))
    band = np.digitize(proj, cuts)
    for j, name in enumerate(ground_classes):
        paint(~sky & (band == j), _ADE[name], tex[name]())

    # Buildings stand on the horizon, trees are leafy blobs in front of them.
    for _ in range(int(rng.integers(0, 4))):
        bw = rng.uniform(0.12, 0.35) * w
        x0 = rng.uniform(-0.1 * w, w - 0.5 * bw)
        top = base - rng.uniform(0.15, 0.45) * h
        bottom = base + rng.uniform(0.0, 0.06) * h
        paint((xx >= x0) & (xx < x0 + bw) & (yy >= top) & (yy < bottom), _ADE["building"], tex["building"]())
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(0, w), base + rng.uniform(-0.2, 0.05) * h
        r = rng.uniform(0.06, 0.14) * min(h, w)
        blob = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(3, 7))):
            ox, oy, ro = cx + rng.normal(0, r), cy + rng.normal(0, 0.7 * r), r * rng.uniform(0.6, 1.1)
            blob |= (xx - ox) ** 2 + (yy - oy) ** 2 < ro**2
        paint(blob, _ADE["tree"], tex["tree"]())

    # Unlabelled clutter (label 0): random polygons in random colours with a checker texture.
    for _ in range(int(rng.integers(0, 3))):
        pts = rng.uniform([0, 0.2 * h], [w, h], size=(1, 2)) + rng.normal(0, 0.08 * min(h, w), size=(6, 2))
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
        c1 = hsv(rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
        paint(mask.astype(bool), 0, object_texture(rng, "checker", h, w, c1, c1 * 0.5))

    # Things on the ground: shaded balls and wooden boxes.
    for _ in range(int(rng.integers(*BALLS_PER_IMAGE))):
        r = rng.uniform(BALL_RADIUS[0], BALL_RADIUS[1] * min(h, w))
        cx, cy = rng.uniform(0, w), rng.uniform(base, h)
        d2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / r**2
        nz = np.sqrt(np.clip(1.0 - d2, 0.0, 1.0))
        light = np.clip((-0.5 * (xx - cx) / r - 0.5 * (yy - cy) / r + 0.7 * nz) / np.sqrt(0.99), 0.0, 1.0)
        colour = hsv(rng.uniform(), rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
        paint(d2 < 1.0, _ADE["ball"], colour * (0.3 + 0.7 * light)[..., None])
    for _ in range(int(rng.integers(*BOXES_PER_IMAGE))):
        paint(*_wooden_box(rng, h, w, base))

    # Half the images leave a thin unlabelled band along region borders, as ADE20k annotators do.
    if rng.uniform() < 0.5:
        kernel = np.ones((3, 3), np.uint8)
        border = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
        label[border & (rng.uniform(size=(h, w)) < 0.7)] = 0
    return finish(rng, img), label


def generate_ade(out: Path, num_train: int, num_val: int, seed: int) -> None:
    ds = out / "ADEChallengeData2016"
    (ds / "classes.txt").parent.mkdir(parents=True)
    (ds / "classes.txt").write_text("".join(f"{c}\n" for c in DEMO_ADE_CLASSES))
    for folder, prefix, n, split in (
        ("training", "ADE_train", num_train, "ade_train"),
        ("validation", "ADE_val", num_val, "ade_val"),
    ):
        (ds / "images" / folder).mkdir(parents=True)
        (ds / "annotations" / folder).mkdir(parents=True)
        for i in range(n):
            img, label = _ade_image(image_rng(seed, split, i))
            stem = f"{prefix}_{i + 1:08d}"
            write_jpeg(ds / "images" / folder / f"{stem}.jpg", img)
            if not cv2.imwrite(str(ds / "annotations" / folder / f"{stem}.png"), label):
                raise OSError(f"could not write {ds / 'annotations' / folder / f'{stem}.png'}")
