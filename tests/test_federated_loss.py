"""LVIS federated sigmoid cross-entropy: class sampling and the loss against an explicit sum."""

from __future__ import annotations

import math

import torch

from transfer.detection.config import ModelConfig
from transfer.detection.federated_loss import (
    FederatedLoss,
    fed_loss_class_weights,
    federated_sigmoid_ce,
    sample_fed_classes,
)
from transfer.detection.model import build_mask_rcnn


def test_sampled_classes_hold_the_positives_and_follow_the_weights() -> None:
    K = 200
    weights = fed_loss_class_weights([0.0] * 100 + [float(i) for i in range(1, 101)], power=0.5)
    torch.testing.assert_close(weights[150], torch.tensor(51.0) ** 0.5)
    labels = torch.tensor([0, 0, 3, 3, 7, 0, 120])
    g = torch.Generator().manual_seed(0)
    classes = sample_fed_classes(labels, weights, 50, generator=g)
    assert classes[:3].tolist() == [3, 7, 120]  # positives first
    assert len(classes) == 50 - 1  # background counts toward the 50 (as in detectron2)
    assert len(set(classes.tolist())) == len(classes) and classes.min() >= 1 and classes.max() <= K
    negatives = classes[3:]
    assert (negatives > 100).all()  # classes with zero images are never drawn
    # Frequent classes are drawn more often than rare ones (weights sqrt(count)).
    hits = torch.zeros(K + 1)
    for s in range(200):
        hits[sample_fed_classes(labels, weights, 10, generator=torch.Generator().manual_seed(s))] += 1
    assert hits[190:].sum() > hits[101:111].sum()


def test_federated_loss_equals_explicit_sum_over_sampled_classes() -> None:
    g = torch.Generator().manual_seed(0)
    N, K = 6, 9
    logits = torch.randn(N, K + 1, generator=g)
    labels = torch.tensor([0, 2, 2, 5, 0, 9])
    classes = torch.tensor([2, 5, 9, 1, 4])
    expected = 0.0
    for i in range(N):
        for c in classes.tolist():
            y = 1.0 if labels[i] == c else 0.0
            p = 1 / (1 + math.exp(-logits[i, c].item()))
            expected -= y * math.log(p) + (1 - y) * math.log(1 - p)
    got = federated_sigmoid_ce(logits, labels, classes)
    torch.testing.assert_close(got, torch.tensor(expected / N), rtol=1e-5, atol=1e-6)
    # Changing a logit of an unsampled class (or the background column) does not change the loss.
    logits2 = logits.clone()
    logits2[:, 3] += 5.0
    logits2[:, 0] -= 5.0
    torch.testing.assert_close(federated_sigmoid_ce(logits2, labels, classes), got)


def test_federated_module_samples_then_sums() -> None:
    weights = torch.ones(9)
    logits = torch.randn(4, 10)
    labels = torch.tensor([0, 1, 2, 0])
    torch.manual_seed(3)
    got = FederatedLoss(weights, num_sampled=5)(logits, labels)
    torch.manual_seed(3)
    classes = sample_fed_classes(labels, weights, 5)
    torch.testing.assert_close(got, federated_sigmoid_ce(logits, labels, classes))


def test_lvis_model_uses_federated_loss_and_sigmoid_scores() -> None:
    cfg = ModelConfig(arch="vit_tiny", embed_dim=64, depth=2, num_heads=2, fpn_channels=32, box_head_dim=64,
                      mask_head_channels=32, cls_loss="federated", fed_loss_classes=4)
    model = build_mask_rcnn(cfg, num_classes=5, detections_per_image=300, score_threshold=0.02,
                            class_image_counts=[1, 4, 9, 16, 25])
    rh = model.roi_heads
    assert rh.sigmoid_scores and rh.detections_per_img == 300 and rh.score_thresh == 0.02
    torch.testing.assert_close(rh.cls_loss.class_weights, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert "roi_heads.cls_loss.class_weights" in model.state_dict()


def test_dataset_class_image_counts(demo_coco) -> None:
    from transfer.detection.config import DataConfig
    from transfer.detection.datasets import CocoInstances, resolve_split

    ds = CocoInstances(resolve_split(DataConfig(kind="coco", root=str(demo_coco)), "train"), train=True)
    counts = ds.class_image_counts()
    per_image = ds.categories_per_image()
    assert len(counts) == ds.num_classes
    assert counts[0] == sum(1 for labels in per_image if 1 in labels) > 0
