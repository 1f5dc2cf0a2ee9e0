"""mIoU / mAcc / aAcc from the confusion matrix: perfect predictions, hand-derived cases, ignore."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from transfer.segmentation.metrics import (
    SegEvaluator,
    confusion_matrix,
    metrics_from_confusion,
    per_class_table,
    save_per_class,
)


def test_perfect_prediction_scores_100() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (2, 17, 23), generator=g)
    target[0, :3] = 255
    pred = target.clone()
    pred[target == 255] = 1  # whatever is predicted on ignored pixels does not matter
    m = metrics_from_confusion(confusion_matrix(pred, target, 5))
    assert m["mIoU"] == pytest.approx(100.0)
    assert m["mAcc"] == pytest.approx(100.0)
    assert m["aAcc"] == pytest.approx(100.0)


def test_hand_built_confusion() -> None:
    # K = 3, eight pixels, the last two ignored (255):
    #   gt   = 0 0 0 1 1 2 | 255 255
    #   pred = 0 0 1 1 2 2 |  0   1
    # Confusion (rows gt, cols pred) over the six labelled pixels:
    #   gt 0: [2, 1, 0]   gt 1: [0, 1, 1]   gt 2: [0, 0, 1]
    # column sums (predicted areas): [2, 2, 2]; row sums (gt areas): [3, 2, 1]
    # IoU_k = diag / (row + col - diag): 2/(3+2-2) = 2/3, 1/(2+2-1) = 1/3, 1/(1+2-1) = 1/2
    #   mIoU = (2/3 + 1/3 + 1/2) / 3 = 1/2 -> 50 %
    # Acc_k = diag / row: 2/3, 1/2, 1/1 -> mAcc = (2/3 + 1/2 + 1) / 3 = 13/18 -> 72.22 %
    # aAcc = trace / total = 4/6 -> 66.67 %
    gt = torch.tensor([0, 0, 0, 1, 1, 2, 255, 255])
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    cm = confusion_matrix(pred, gt, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    m = metrics_from_confusion(cm)
    assert m["IoU"] == pytest.approx([200 / 3, 100 / 3, 50.0])
    assert m["Acc"] == pytest.approx([200 / 3, 50.0, 100.0])
    assert m["mIoU"] == pytest.approx(50.0)
    assert m["mAcc"] == pytest.approx(1300 / 18)
    assert m["aAcc"] == pytest.approx(400 / 6)


def test_absent_classes_are_left_out_of_the_means() -> None:
    # K = 3: gt = [0, 0], pred = [0, 1].
    #   class 0: inter 1, union 2 + 1 - 1 = 2 -> IoU 50; Acc 1/2 -> 50
    #   class 1: predicted once, never in gt -> IoU 0/1 = 0 (counts), Acc 0/0 = NaN (left out)
    #   class 2: in neither -> IoU NaN and Acc NaN (left out)
    # mIoU = (50 + 0) / 2 = 25; mAcc = 50; aAcc = 1/2 = 50.
    m = metrics_from_confusion(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 3))
    assert m["IoU"][:2] == pytest.approx([50.0, 0.0])
    assert math.isnan(m["IoU"][2]) and math.isnan(m["Acc"][1]) and math.isnan(m["Acc"][2])
    assert m["mIoU"] == pytest.approx(25.0)
    assert m["mAcc"] == pytest.approx(50.0)
    assert m["aAcc"] == pytest.approx(50.0)


def test_ignored_pixels_never_count() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (40, 40), generator=g)
    target[::3] = 255
    pred = torch.randint(0, 4, (40, 40), generator=g)
    base = confusion_matrix(pred, target, 4)
    other = pred.clone()
    other[target == 255] = (other[target == 255] + 1) % 4  # change only predictions on ignored pixels
    assert torch.equal(confusion_matrix(other, target, 4), base)
    assert int(base.sum()) == int((target != 255).sum())


def test_confusion_matches_loop_reference_and_accumulates() -> None:
    rng = np.random.default_rng(2)
    K = 6
    target = rng.integers(0, K, size=(3, 21, 19))
    target[rng.random(target.shape) < 0.2] = 255
    pred = rng.integers(0, K, size=target.shape)
    ref = np.zeros((K, K), dtype=np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):  # independent per-pixel count
        if t != 255:
            ref[t, p] += 1
    ev = SegEvaluator(K)
    for i in range(3):  # batch by batch
        ev.update(torch.from_numpy(pred[i]), torch.from_numpy(target[i]))
    m = ev.compute()
    assert np.array_equal(ev.cm.numpy(), ref)
    inter, gt_area, pred_area = np.diag(ref), ref.sum(1), ref.sum(0)
    assert m["mIoU"] == pytest.approx(100 * np.mean(inter / (gt_area + pred_area - inter)))
    assert m["aAcc"] == pytest.approx(100 * inter.sum() / ref.sum())


def test_label_outside_classes_is_an_error() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 3)


def test_per_class_table_and_json(tmp_path) -> None:
    m = metrics_from_confusion(confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 3))
    table = per_class_table(m, ["sky", "tree", "ball"])
    assert "sky" in table and "nan" in table.splitlines()[4]  # "ball" row: never present
    data = json.loads(save_per_class(m, ["sky", "tree", "ball"], tmp_path / "r.json").read_text())
    assert data["mIoU"] == pytest.approx(25.0)
    assert data["classes"][2] == {"name": "ball", "IoU": None, "Acc": None}
