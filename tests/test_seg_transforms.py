"""Training / test transforms: image and label stay aligned through rescale, crop, flip and pad;
the crop's category-max-ratio rule; keep-ratio sizes; normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transfer.segmentation.transforms import (
    EvalTransform,
    TrainTransform,
    denormalize,
    photometric_distortion,
    random_crop_box,
    rescale_size,
)


def test_rescale_size_hand_values() -> None:
    # factor = min(max(scale) / long side, min(scale) / short side), sizes rounded half up.
    assert rescale_size(512, 683, (2048, 512)) == (512, 683)  # min(2048/683, 512/512) = 1
    assert rescale_size(100, 300, (2048, 512)) == (512, 1536)  # min(6.83, 5.12) = 5.12
    assert rescale_size(400, 3000, (2048, 512)) == (273, 2048)  # min(0.683, 1.28): the long side binds
    assert rescale_size(150, 200, (512, 128)) == (128, 171)  # 200 * 128/150 = 170.67 -> 171


def coded_sample(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A label map of random blocks (ids 0..5 and 255) and an image whose red channel IS the label
    and whose green / blue channels are the row / column index, so alignment can be read back."""
    blocks = rng.choice([0, 1, 2, 3, 4, 5, 255], size=(h // 8 + 1, w // 8 + 1))
    label = np.kron(blocks, np.ones((8, 8), dtype=np.int64))[:h, :w].astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([label, yy % 256, xx % 256], axis=-1).astype(np.uint8)
    return image, label


@pytest.mark.parametrize("seed", range(12))
def test_crop_flip_pad_keep_image_and_label_aligned(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(30, 90)), int(rng.integers(30, 90))
    image, label = coded_sample(rng, h, w)
    # ratio 1 and scale = the image's own sides: the rescale is the identity, so alignment is exact.
    tf = TrainTransform(crop_size=(48, 48), scale=(max(h, w), min(h, w)), ratio_range=(1.0, 1.0),
                        cat_max_ratio=0.75, photometric=False)
    img_t, lbl_t = tf(image, label, np.random.default_rng(100 + seed))
    assert img_t.shape == (3, 48, 48) and lbl_t.shape == (48, 48) and lbl_t.dtype == torch.long
    img = denormalize(img_t).round().long()
    ch, cw = min(48, h), min(48, w)
    # Padding: right / bottom, image 0 after normalisation, label ignored.
    assert (lbl_t[ch:] == 255).all() and (lbl_t[:, cw:] == 255).all()
    assert (img_t[:, ch:] == 0).all() and (img_t[:, :, cw:] == 0).all()
    crop_img, crop_lbl = img[:, :ch, :cw], lbl_t[:ch, :cw]
    assert torch.equal(crop_img[0], crop_lbl)  # the label under every pixel is the coded one
    # The crop is one contiguous window of the original, possibly mirrored horizontally.
    rows, cols = crop_img[1, :, 0], crop_img[2, 0, :]
    y0 = int(rows[0])
    assert torch.equal(rows, torch.arange(y0, y0 + ch))
    flipped = cw > 1 and cols[0] > cols[1]
    x0 = int(cols.min())
    want_cols = torch.arange(x0, x0 + cw)
    assert torch.equal(cols, want_cols.flip(0) if flipped else want_cols)
    assert torch.equal(crop_lbl, torch.from_numpy(label[y0 : y0 + ch, x0 : x0 + cw]).long().flip(1 if flipped else ()))


@pytest.mark.parametrize("seed", range(6))
def test_rescale_keeps_alignment_away_from_boundaries(seed: int) -> None:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 6, size=(6, 8))
    label = np.kron(blocks, np.ones((16, 16), dtype=np.int64)).astype(np.uint8)  # 96 x 128
    palette = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30], [30, 200, 200], [200, 30, 200]])
    image = palette[label].astype(np.uint8)
    tf = TrainTransform(crop_size=(64, 64), scale=(256, 64), ratio_range=(0.5, 2.0), photometric=False)
    img_t, lbl_t = tf(image, label, np.random.default_rng(seed))
    img = denormalize(img_t).permute(1, 2, 0).numpy()
    lbl = lbl_t.numpy()
    # Pixels whose 5x5 label neighbourhood is uniform must show that class's colour exactly
    # (bilinear and nearest resampling only disagree next to a boundary).
    pad = np.pad(lbl, 2, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(pad, (5, 5))
    interior = (windows == lbl[..., None, None]).all(axis=(-1, -2)) & (lbl != 255)
    assert interior.sum() > 500
    np.testing.assert_allclose(img[interior], palette[lbl[interior]], atol=1.0)


def rule_holds(window: np.ndarray, ratio: float) -> bool:
    """mmseg's RandomCrop test, written with np.unique as the reference does."""
    labels, counts = np.unique(window, return_counts=True)
    counts = counts[labels != 255]
    return len(counts) > 1 and counts.max() / counts.sum() < ratio


def test_cat_max_ratio_is_honoured() -> None:
    # 64 x 64, class 0 everywhere except a 24 x 24 square of class 1 in the top-left corner and an
    # ignored stripe. A 32 x 32 crop passes only if it holds enough of the square (class 0 < 75 %).
    label = np.zeros((64, 64), dtype=np.uint8)
    label[:24, :24] = 1
    label[40:44] = 255
    accepted, ok_with, ok_without = 0, 0, 0
    for seed in range(300):
        (y0, y1, x0, x1), passed = random_crop_box(label, (32, 32), np.random.default_rng(seed), 0.75)
        assert (y1 - y0, x1 - x0) == (32, 32)
        window = label[y0:y1, x0:x1]
        if passed:  # an accepted crop always obeys the rule
            assert rule_holds(window, 0.75)
        accepted += passed
        ok_with += rule_holds(window, 0.75)
        (y0, y1, x0, x1), _ = random_crop_box(label, (32, 32), np.random.default_rng(seed), 1.0)
        ok_without += rule_holds(label[y0:y1, x0:x1], 0.75)
    # The unchecked fallback after 10 rejections may obey the rule by chance, nothing else does.
    assert accepted <= ok_with and accepted > 0.5 * 300
    assert ok_with > 3 * ok_without  # retrying changes the crop distribution substantially
    # A single-class image can never pass; the crop is still a valid window after 10 tries.
    box, passed = random_crop_box(np.zeros((64, 64), np.uint8), (32, 32), np.random.default_rng(0), 0.75)
    assert not passed and box[1] - box[0] == 32


def test_photometric_distortion_keeps_shape_and_changes_colours() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    outs = [photometric_distortion(image, np.random.default_rng(s)) for s in range(16)]
    assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
    assert sum(not np.array_equal(o, image) for o in outs) >= 12  # each of 4 steps fires with p = 0.5
    # Same rng seed -> same output (augmentation is a function of the seed alone).
    assert np.array_equal(photometric_distortion(image, np.random.default_rng(3)), outs[3])


def test_eval_transform_resizes_image_only() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(150, 200, 3), dtype=np.uint8)
    label = rng.integers(0, 5, size=(150, 200), dtype=np.uint8)
    img_t, lbl_t = EvalTransform(scale=(512, 128))(image, label)
    assert img_t.shape == (3, 128, 171)
    assert torch.equal(lbl_t, torch.from_numpy(label).long())  # metrics use the original resolution
    img = denormalize(img_t)
    assert float(img.min()) > -0.5 and float(img.max()) < 255.5
