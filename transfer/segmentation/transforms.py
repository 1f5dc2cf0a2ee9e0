"""ADE20k training / test transforms (mmseg's pipeline for BEiT's UperNet recipe).

Train: random rescale (ratio 0.5-2.0 of (2048, 512), keep ratio) -> random crop 512 with
cat_max_ratio 0.75 -> horizontal flip (p 0.5) -> photometric distortion -> normalise -> pad to the
crop (image 0, label 255).
Test: rescale to (2048, 512) keep ratio -> normalise; the label stays at its original size.

Images are (H, W, 3) uint8 RGB and labels (H, W) uint8 numpy arrays until the final tensor
conversion. Resizing uses cv2 (bilinear for images, nearest for labels, no antialiasing) and the
HSV round trip uses cv2's 8-bit HSV (hue in [0, 180)), which is what the reference pipeline does,
so the augmentation statistics match it. Every random draw comes from the `rng` passed in, so a
sample's augmentation depends only on (seed, epoch, index) and resumes exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .model import IGNORE_INDEX

# ImageNet statistics in RGB, 0..255 (the reference normalisation for ADE20k).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


def rescale_size(h: int, w: int, scale: tuple[int, int]) -> tuple[int, int]:
    """Keep-ratio target size: the largest (h', w') with long side <= max(scale), short <= min(scale).

    Returns (new_h, new_w), rounded half up as mmcv's `rescale_size`.
    """
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def resize(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize to (h, w): image bilinear, label nearest."""
    h, w = size
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    if label is not None:
        label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, label


def random_crop_box(
    label: np.ndarray,
    crop: tuple[int, int],
    rng: np.random.Generator,
    cat_max_ratio: float = 0.75,
    ignore_index: int = IGNORE_INDEX,
    max_tries: int = 10,
) -> tuple[tuple[int, int, int, int], bool]:
    """Pick a crop window; with cat_max_ratio < 1 retry until no class dominates (mmseg's RandomCrop).

    A window is accepted when it holds at least two labelled classes and the most frequent one
    covers less than `cat_max_ratio` of its labelled pixels. After `max_tries` rejected windows
    the next random window is used as is.

    Returns:
        (y0, y1, x0, x1) and whether the window passed the test (always True if cat_max_ratio >= 1).
    """
    H, W = label.shape
    ch, cw = crop

    def draw() -> tuple[int, int, int, int]:
        y0 = int(rng.integers(0, max(H - ch, 0) + 1))
        x0 = int(rng.integers(0, max(W - cw, 0) + 1))
        return y0, min(y0 + ch, H), x0, min(x0 + cw, W)

    box = draw()
    if cat_max_ratio >= 1.0:
        return box, True
    for _ in range(max_tries):
        y0, y1, x0, x1 = box
        counts = np.bincount(label[y0:y1, x0:x1].ravel(), minlength=256)
        counts[ignore_index] = 0
        counts = counts[counts > 0]
        if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
            return box, True
        box = draw()
    return box, False


def _convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(
    image: np.ndarray,
    rng: np.random.Generator,
    brightness_delta: int = 32,
    contrast_range: tuple[float, float] = (0.5, 1.5),
    saturation_range: tuple[float, float] = (0.5, 1.5),
    hue_delta: int = 18,
) -> np.ndarray:
    """mmseg's PhotoMetricDistortion on an (H, W, 3) uint8 RGB image.

    Each step applies with probability 0.5: brightness (+U(-32, 32)), then contrast (xU(0.5, 1.5))
    either first or last (coin flip), saturation (S x U(0.5, 1.5)) and hue (H + randint[-18, 18),
    mod 180) in 8-bit HSV. Values are clipped to [0, 255] and truncated to uint8 after each step.
    """
    if rng.integers(2):
        image = _convert(image, beta=rng.uniform(-brightness_delta, brightness_delta))
    contrast_first = bool(rng.integers(2))

    def contrast(img: np.ndarray) -> np.ndarray:
        return _convert(img, alpha=rng.uniform(*contrast_range)) if rng.integers(2) else img

    if contrast_first:
        image = contrast(image)
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*saturation_range))
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.integers(2):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(rng.integers(-hue_delta, hue_delta))) % 180
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if not contrast_first:
        image = contrast(image)
    return image


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> normalised (3, H, W) float32."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (x - mean) / std


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of the normalisation: (..., 3, H, W) -> 0..255 float (for visualisation and tests)."""
    mean = images.new_tensor(MEAN).view(3, 1, 1)
    std = images.new_tensor(STD).view(3, 1, 1)
    return images * std + mean


@dataclass
class TrainTransform:
    """The training pipeline. `__call__(image, label, rng) -> (image (3, c, c) float, label (c, c) long)`."""

    crop_size: tuple[int, int] = (512, 512)
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    ignore_index: int = IGNORE_INDEX

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ratio = rng.uniform(*self.ratio_range)
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        image, label = resize(image, label, rescale_size(*label.shape, target))
        (y0, y1, x0, x1), _ = random_crop_box(label, self.crop_size, rng, self.cat_max_ratio, self.ignore_index)
        image, label = image[y0:y1, x0:x1], label[y0:y1, x0:x1]
        if rng.random() < self.flip_prob:
            image, label = image[:, ::-1], label[:, ::-1]
        if self.photometric:
            image = photometric_distortion(np.ascontiguousarray(image), rng)
        img_t = to_tensor(image)
        lbl_t = torch.from_numpy(np.ascontiguousarray(label)).long()
        # Pad after normalisation (image 0 = the mean colour, label ignored), right / bottom.
        pad_h = self.crop_size[0] - img_t.shape[1]
        pad_w = self.crop_size[1] - img_t.shape[2]
        if pad_h > 0 or pad_w > 0:
            img_t = F.pad(img_t, (0, max(pad_w, 0), 0, max(pad_h, 0)), value=0.0)
            lbl_t = F.pad(lbl_t, (0, max(pad_w, 0), 0, max(pad_h, 0)), value=self.ignore_index)
        return img_t, lbl_t


@dataclass
class EvalTransform:
    """The test pipeline: keep-ratio resize to `scale`, normalise; the label keeps its original size.

    `__call__(image, label) -> (image (3, h', w') float, label (H, W) long)`.
    """

    scale: tuple[int, int] = (2048, 512)

    def __call__(self, image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        resized, _ = resize(image, None, rescale_size(*image.shape[:2], self.scale))
        return to_tensor(resized), torch.from_numpy(np.ascontiguousarray(label)).long()
