"""Pictures: the split views show exactly each subset's pixels; overlays colour the right pixels."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from engine.plots import plot_loss_curves, series, smooth
from pretrain.visualize import save_split_figure, split_views
from transfer.detection.visualize import save_detection_figure
from transfer.segmentation.visualize import IGNORE_INDEX, colorize, palette, save_segmentation_figure


def test_split_views_partition_the_image():
    image = torch.rand(3, 32, 48)
    in_a = torch.zeros(2, 3, dtype=torch.bool)
    in_a[0, 1] = in_a[1, 2] = True
    view_a, view_b = split_views(image, in_a, patch_size=16)
    assert torch.equal(view_a[:, :16, 16:32], image[:, :16, 16:32])
    assert view_a[:, :16, :16].eq(0.5).all()  # a B patch, greyed in A's view
    assert torch.equal(view_b[:, :16, :16], image[:, :16, :16])
    assert view_b[:, 16:, 32:].eq(0.5).all()


def test_smooth_is_a_centred_mean_without_lag():
    # Window 3 by hand: ends average the two points in reach.
    assert smooth([1.0, 2.0, 6.0, 3.0], 3).tolist() == [1.5, 3.0, 11 / 3, 4.5]
    # A straight line stays on itself away from the ends: no lag behind the data.
    line = np.arange(30, dtype=float)
    assert np.allclose(smooth(line, 5)[2:-2], line[2:-2])


def test_colorize_blacks_out_ignored_pixels():
    colors = palette(4)
    label = torch.tensor([[0, 3], [IGNORE_INDEX, 1]])
    out = colorize(label, colors)
    assert torch.equal(out[0, 1], colors[3]) and torch.equal(out[1, 1], colors[1])
    assert out[1, 0].eq(0).all()


def test_figures_are_written(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps({"step": i, "loss": 1.0 / (i + 1)}) for i in range(20)))
    assert series([{"step": 1, "loss": 2.0}, {"step": 2}], "loss") == ([1], [2.0])
    paths = [plot_loss_curves({"run": metrics}, tmp_path / "loss.png")]
    paths.append(save_split_figure(torch.rand(3, 32, 32), torch.rand(2, 2) > 0.5, 16, tmp_path / "split.png"))
    image = torch.randint(0, 255, (3, 40, 40), dtype=torch.uint8)
    masks = torch.zeros(1, 40, 40, dtype=torch.bool)
    masks[0, 5:20, 5:20] = True
    gt = {"boxes": torch.tensor([[5.0, 5.0, 20.0, 20.0]]), "labels": torch.tensor([1]), "masks": masks}
    pred = {**gt, "scores": torch.tensor([0.9]), "masks": masks[:, None].float()}
    paths.append(save_detection_figure([(image, gt, pred)], {1: "disc"}, tmp_path / "det.png"))
    label = torch.randint(0, 4, (40, 40))
    paths.append(save_segmentation_figure([(image, label, label)], 4, tmp_path / "seg.png"))
    for p in paths:
        with Image.open(p) as im:
            assert im.size[0] > 100 and im.size[1] > 100
