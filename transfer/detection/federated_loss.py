"""LVIS federated sigmoid cross-entropy for the box classifier (Zhou et al.; ViTDet's LVIS configs).

LVIS images are exhaustively annotated only for some categories, so a softmax over all 1203 classes
punishes correct detections of unannotated ones. The federated loss replaces it with a per-class
sigmoid cross-entropy evaluated only on a sampled subset of classes per batch: every class present
among the batch's labels, plus negatives drawn without replacement with probability proportional
to (images containing the class) ^ 0.5 until `num_sampled` classes are chosen (50 in ViTDet). The
loss is summed over proposals and sampled classes and divided by the number of proposals.

Labels follow torchvision: 0 is background, classes are 1..K, logits are (N, K + 1) and the
background column is unused by the sigmoid (detectron2 keeps background last; same loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def fed_loss_class_weights(image_counts: Sequence[float], power: float = 0.5) -> torch.Tensor:
    """Sampling weight of each class 1..K: image_count ** power -> (K,) float."""
    counts = torch.as_tensor(list(image_counts), dtype=torch.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("class image counts must be one non-negative number per class")
    return counts.pow(power).float()


def sample_fed_classes(
    labels: torch.Tensor, class_weights: torch.Tensor, num_sampled: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Classes (1..K) whose sigmoid terms enter the loss for this batch.

    Args:
        labels: (N,) long, 0 = background.
        class_weights: (K,) sampling weights of classes 1..K.
        num_sampled: target size of the set (positives count toward it, background too, as in
            detectron2, where it is a member of the unique labels).
        generator: for reproducible draws in tests.
    Returns:
        (M,) long class ids in 1..K: the unique positive labels first, then the sampled negatives.
    """
    unique = torch.unique(labels)
    positives = unique[unique > 0]
    if len(unique) >= num_sampled:
        return positives
    prob = torch.cat([class_weights.new_zeros(1), class_weights.float()]).to(labels.device)  # index = class id
    prob[unique] = 0
    n_draw = min(num_sampled - len(unique), int((prob > 0).sum()))
    if n_draw == 0:
        return positives
    negatives = torch.multinomial(prob, n_draw, replacement=False, generator=generator)
    return torch.cat([positives, negatives])


def federated_sigmoid_ce(logits: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Sigmoid cross-entropy over `classes` only, summed, divided by the number of proposals.

    Args:
        logits: (N, K + 1), column 0 = background (unused).
        labels: (N,) long in 0..K.
        classes: (M,) class ids in 1..K that enter the loss.
    """
    if logits.numel() == 0:
        return logits.sum() * 0.0
    N = logits.shape[0]
    target = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    mask = torch.zeros(logits.shape[1], dtype=logits.dtype, device=logits.device)
    mask[classes] = 1.0
    mask[0] = 0.0
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (loss * mask).sum() / N


class FederatedLoss(nn.Module):
    """Box-classifier loss: (logits (N, K + 1), labels (N,)) -> scalar; classes sampled per call.

    `class_weights` (K,) is a buffer, so it travels with the detector's checkpoint.
    """

    def __init__(self, class_weights: torch.Tensor, num_sampled: int = 50) -> None:
        super().__init__()
        self.register_buffer("class_weights", class_weights.float().clone())
        self.num_sampled = num_sampled

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        classes = sample_fed_classes(labels, self.class_weights, self.num_sampled)
        return federated_sigmoid_ce(logits, labels, classes)
