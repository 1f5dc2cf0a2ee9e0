"""Sliding-window inference: window grid, equality with whole-image inference, full coverage, and an
independent per-window loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from transfer.segmentation.inference import predict_logits, slide_inference, window_starts
from transfer.segmentation.model import build_upernet

K = 4


@pytest.fixture(scope="module")
def conv_model() -> nn.Module:
    # A 5x5 conv sees zero padding at window borders, so windowed and whole-image logits differ
    # near window edges: a test that could tell if windows were misplaced.
    torch.manual_seed(0)
    return nn.Conv2d(3, K, kernel_size=5, padding=2).eval()


@pytest.fixture(scope="module")
def tiny_upernet() -> nn.Module:
    torch.manual_seed(0)
    return build_upernet("vit_tiny", K, channels=16, aux_channels=8, depth=2, embed_dim=64, num_heads=2,
                         img_size=64, drop_path=0.0).eval()


def test_window_starts_hand_values() -> None:
    # n = max(H - c + s - 1, 0) // s + 1 windows; the last one is shifted to end at the border.
    assert window_starts(100, 64, 42) == [0, 36]  # (100-64+41)//42+1 = 2; min(42+64, 100)-64 = 36
    assert window_starts(683, 512, 341) == [0, 171]  # ADE20k-like width after resizing
    assert window_starts(512, 512, 341) == [0]
    assert window_starts(50, 64, 42) == [0]  # smaller than the crop: one window, the whole side
    assert window_starts(200, 64, 42) == [0, 42, 84, 126, 136]


def test_slide_equals_whole_at_crop_size(conv_model, tiny_upernet) -> None:
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for model in (conv_model, tiny_upernet):
            whole = predict_logits(model, x, K, mode="whole")
            slide = predict_logits(model, x, K, mode="slide", crop=64, stride=42)
            torch.testing.assert_close(slide, whole)


def test_slide_covers_every_pixel_with_expected_counts(conv_model) -> None:
    x = torch.randn(1, 3, 100, 150)
    with torch.no_grad():
        _, count = slide_inference(conv_model, x, K, crop=64, stride=42, return_count=True)
    assert (count > 0).all()
    # Rows: windows [0, 64) and [36, 100); columns: starts 0, 42, 84, 86 (width 64 each).
    rows = torch.zeros(100)
    rows[0:64] += 1
    rows[36:100] += 1
    cols = torch.zeros(150)
    for c0 in (0, 42, 84, 86):
        cols[c0 : c0 + 64] += 1
    torch.testing.assert_close(count, rows[:, None] * cols[None, :])


def test_slide_matches_independent_window_loop(conv_model) -> None:
    H, W, crop, stride = 90, 130, 48, 32
    x = torch.randn(2, 3, H, W)
    acc = torch.zeros(2, K, H, W)
    cnt = torch.zeros(H, W)
    with torch.no_grad():
        # mmseg's loop, one window at a time.
        for hi in range(max(H - crop + stride - 1, 0) // stride + 1):
            for wi in range(max(W - crop + stride - 1, 0) // stride + 1):
                y2, x2 = min(hi * stride + crop, H), min(wi * stride + crop, W)
                y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
                acc[:, :, y1:y2, x1:x2] += conv_model(x[:, :, y1:y2, x1:x2])
                cnt[y1:y2, x1:x2] += 1
        expected = acc / cnt
        for batch_windows in (1, 3, 100):
            got = slide_inference(conv_model, x, K, crop=crop, stride=stride, batch_windows=batch_windows)
            torch.testing.assert_close(got, expected)
        # Windows differ from one whole-image pass near window borders, so the test is sensitive.
        assert not torch.allclose(expected, conv_model(x), atol=1e-4)


def test_predict_logits_resizes_to_label_size(tiny_upernet) -> None:
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = predict_logits(tiny_upernet, x, K, mode="slide", crop=64, stride=42, out_size=(80, 120))
    assert out.shape == (1, K, 80, 120)
    with pytest.raises(ValueError, match="slide"):
        predict_logits(tiny_upernet, x, K, mode="sliding")
