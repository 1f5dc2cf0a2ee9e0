"""Cascade R-CNN RoI heads (Cai & Vasconcelos) on torchvision's `RoIHeads`.

Stage k pools features for its proposals, runs its own box head and predictor, and regresses the
boxes with its own weights; its refined boxes (detached, clipped) are the next stage's proposals.
Stage 0 is exactly torchvision's box branch (same sampling of 512 proposals with ground truth
added, same matcher, same loss); later stages relabel the refined boxes against the ground truth at
their own IoU threshold, without resampling. Defaults follow detectron2's Cascade R-CNN as used by
ViTDet: IoU 0.5 / 0.6 / 0.7, class-agnostic regression with box weights (10, 10, 5, 5),
(20, 20, 10, 10), (30, 30, 15, 15), stage losses summed with weight 1 each while the gradient
reaching the shared features from each stage is scaled by 1 / stages (mmdetection instead weights
the stage losses 1 / 0.5 / 0.25: set `stage_loss_weights` and `grad_scale=1`). At test time a
proposal's class scores are averaged over the stages and its box is the last stage's; the mask head
runs on the final detections (trained, as in detectron2, on stage 0's positive proposals).

With one stage at IoU 0.5 and a class-specific predictor this is torchvision's Mask R-CNN RoI head
(same state-dict keys), which is also how the federated LVIS loss is plugged into Mask R-CNN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference, maskrcnn_loss
from torchvision.ops import boxes as box_ops

Features = dict[str, torch.Tensor]
Shapes = list[tuple[int, int]]
Targets = list[dict[str, torch.Tensor]]

CASCADE_IOUS = (0.5, 0.6, 0.7)
CASCADE_BOX_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))


class ClassAgnosticPredictor(nn.Module):
    """Box predictor with one box per RoI: features (N, D[, 1, 1]) -> logits (N, C + 1), deltas (N, 4)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; the gradient flowing back through it is multiplied by `scale`."""
    return x if scale == 1.0 else x * scale + x.detach() * (1.0 - scale)


def box_loss(regression: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """torchvision's Fast R-CNN box loss for class-specific (N, 4C) or class-agnostic (N, 4) deltas:
    smooth L1 (beta 1/9) on the positives' deltas, summed, divided by the number of RoIs."""
    pos = torch.where(labels > 0)[0]
    deltas = regression.reshape(regression.shape[0], -1, 4)
    deltas = deltas[pos, 0] if deltas.shape[1] == 1 else deltas[pos, labels[pos]]
    return F.smooth_l1_loss(deltas, targets[pos], beta=1 / 9, reduction="sum") / labels.numel()


class CascadeRoIHeads(RoIHeads):
    """torchvision `RoIHeads` with a cascade of box stages and a pluggable classification loss.

    Args:
        box_roi_pool, mask_roi_pool, mask_head, mask_predictor: as torchvision's `RoIHeads`.
        box_heads, box_predictors: one per stage (stage 0's become `box_head` / `box_predictor`).
        stage_ious: foreground IoU threshold of each stage (background below it).
        stage_box_weights: box-coder weights (wx, wy, ww, wh) of each stage.
        stage_loss_weights: multiplier of each stage's classification and box losses.
        grad_scale: gradient multiplier on the pooled features of every stage (detectron2: 1 / stages).
        cls_loss: (logits (N, C + 1), labels (N,)) -> loss; None = softmax cross-entropy.
        sigmoid_scores: score detections with per-class sigmoids (the federated loss) instead of softmax.
        other arguments: torchvision's `RoIHeads`.
    """

    def __init__(
        self,
        box_roi_pool: nn.Module,
        box_heads: Sequence[nn.Module],
        box_predictors: Sequence[nn.Module],
        stage_ious: Sequence[float] = CASCADE_IOUS,
        stage_box_weights: Sequence[tuple[float, float, float, float]] = CASCADE_BOX_WEIGHTS,
        stage_loss_weights: Sequence[float] | None = None,
        grad_scale: float | None = None,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        cls_loss: nn.Module | None = None,
        sigmoid_scores: bool = False,
    ) -> None:
        n = len(box_heads)
        if not (len(box_predictors) == len(stage_ious) == len(stage_box_weights) == n) or n == 0:
            raise ValueError(
                f"cascade stages disagree: {n} box heads, {len(box_predictors)} predictors, "
                f"{len(stage_ious)} IoU thresholds, {len(stage_box_weights)} box weights"
            )
        super().__init__(
            box_roi_pool, box_heads[0], box_predictors[0], stage_ious[0], stage_ious[0], batch_size_per_image,
            positive_fraction, tuple(stage_box_weights[0]), score_thresh, nms_thresh, detections_per_img,
            mask_roi_pool, mask_head, mask_predictor,
        )
        self.num_stages = n
        self.extra_box_heads = nn.ModuleList(box_heads[1:])
        self.extra_box_predictors = nn.ModuleList(box_predictors[1:])
        self.stage_matchers = [self.proposal_matcher] + [det_utils.Matcher(t, t, False) for t in stage_ious[1:]]
        self.stage_coders = [self.box_coder] + [det_utils.BoxCoder(tuple(w)) for w in stage_box_weights[1:]]
        self.stage_loss_weights = tuple(stage_loss_weights) if stage_loss_weights is not None else (1.0,) * n
        self.grad_scale = grad_scale if grad_scale is not None else 1.0 / n
        self.cls_loss = cls_loss
        self.sigmoid_scores = sigmoid_scores

    def _stage_modules(self, k: int) -> tuple[nn.Module, nn.Module]:
        if k == 0:
            return self.box_head, self.box_predictor
        return self.extra_box_heads[k - 1], self.extra_box_predictors[k - 1]

    def _run_stage(
        self, features: Features, proposals: list[torch.Tensor], image_shapes: Shapes, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled RoIs -> stage k's (logits (N, C + 1), deltas (N, 4 or 4C)) for all images at once."""
        head, predictor = self._stage_modules(k)
        x = scale_gradient(self.box_roi_pool(features, proposals, image_shapes), self.grad_scale)
        return predictor(head(x))

    def _refine(
        self, logits: torch.Tensor, deltas: torch.Tensor, proposals: list[torch.Tensor], image_shapes: Shapes, k: int
    ) -> list[torch.Tensor]:
        """Stage k's boxes as the next stage's proposals: one box per RoI (class-specific deltas use
        the top foreground class), detached and clipped; empty boxes dropped in training."""
        boxes = self.stage_coders[k].decode(deltas.detach(), proposals)  # (N, 1 or C, 4)
        if boxes.shape[1] > 1:
            top = logits.detach()[:, 1:].argmax(dim=1) + 1
            boxes = boxes[torch.arange(boxes.shape[0], device=boxes.device), top]
        else:
            boxes = boxes[:, 0]
        out = []
        for b, shape in zip(boxes.split([len(p) for p in proposals]), image_shapes):
            b = box_ops.clip_boxes_to_image(b, shape)
            if self.training:
                b = b[(b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])]
            out.append(b)
        return out

    def _label(self, proposals: list[torch.Tensor], targets: Targets, k: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Labels (per image) and regression targets (all RoIs) of refined boxes at stage k's IoU."""
        labels, matched_boxes = [], []
        for props, t in zip(proposals, targets):
            gt = t["boxes"].to(props.dtype)
            if gt.numel() == 0:
                labels.append(torch.zeros(len(props), dtype=torch.int64, device=props.device))
                matched_boxes.append(torch.zeros_like(props))
                continue
            idx = self.stage_matchers[k](box_ops.box_iou(gt, props))
            lab = t["labels"][idx.clamp(min=0)].clone()
            lab[idx < 0] = 0  # below the stage's IoU: background (no ignored band: low == high)
            labels.append(lab)
            matched_boxes.append(gt[idx.clamp(min=0)])
        targets_k = self.stage_coders[k].encode(matched_boxes, proposals)
        return labels, torch.cat(targets_k, dim=0)

    def _class_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels) if self.cls_loss is None else self.cls_loss(logits, labels)

    def _forward_train(
        self, features: Features, proposals: list[torch.Tensor], image_shapes: Shapes, targets: Targets
    ) -> dict[str, torch.Tensor]:
        proposals, matched_idxs, labels, reg_targets = self.select_training_samples(proposals, targets)
        first = (proposals, matched_idxs, labels)
        reg_targets = torch.cat(reg_targets, dim=0)
        losses: dict[str, torch.Tensor] = {}
        for k in range(self.num_stages):
            logits, deltas = self._run_stage(features, proposals, image_shapes, k)
            flat = torch.cat(labels, dim=0)
            suffix = f"_stage{k}" if self.num_stages > 1 else ""
            w = self.stage_loss_weights[k]
            losses["loss_classifier" + suffix] = w * self._class_loss(logits, flat)
            losses["loss_box_reg" + suffix] = w * box_loss(deltas, flat, reg_targets)
            if k + 1 < self.num_stages:
                proposals = self._refine(logits, deltas, proposals, image_shapes, k)
                labels, reg_targets = self._label(proposals, targets, k + 1)
        if self.has_mask():
            losses["loss_mask"] = self._mask_loss(features, *first, image_shapes, targets)
        return losses

    def _mask_loss(
        self,
        features: Features,
        proposals: list[torch.Tensor],
        matched_idxs: list[torch.Tensor],
        labels: list[torch.Tensor],
        image_shapes: Shapes,
        targets: Targets,
    ) -> torch.Tensor:
        """Mask loss on the positive sampled proposals (matched to their ground truth)."""
        pos = [torch.where(lab > 0)[0] for lab in labels]
        mask_props = [p[i] for p, i in zip(proposals, pos)]
        logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_props, image_shapes)))
        return maskrcnn_loss(
            logits, mask_props, [t["masks"] for t in targets], [t["labels"] for t in targets],
            [m[i] for m, i in zip(matched_idxs, pos)],
        )

    def _probs(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.sigmoid_scores else F.softmax(logits, dim=-1)

    def _forward_test(
        self, features: Features, proposals: list[torch.Tensor], image_shapes: Shapes
    ) -> list[dict[str, torch.Tensor]]:
        scores = 0.0
        for k in range(self.num_stages):
            logits, deltas = self._run_stage(features, proposals, image_shapes, k)
            scores = scores + self._probs(logits)
            if k + 1 < self.num_stages:
                proposals = self._refine(logits, deltas, proposals, image_shapes, k)
        boxes = self.stage_coders[-1].decode(deltas, proposals)  # (N, 1 or C + 1, 4)
        result = self._detections(scores / self.num_stages, boxes, [len(p) for p in proposals], image_shapes)
        if self.has_mask():
            mask_props = [r["boxes"] for r in result]
            logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_props, image_shapes)))
            for prob, r in zip(maskrcnn_inference(logits, [r["labels"] for r in result]), result):
                r["masks"] = prob
        return result

    def _detections(
        self, scores: torch.Tensor, boxes: torch.Tensor, sizes: list[int], image_shapes: Shapes
    ) -> list[dict[str, torch.Tensor]]:
        """Per image: drop background, threshold, drop tiny boxes, per-class NMS, keep the top ones
        (torchvision's `postprocess_detections` on given scores (N, C + 1) and boxes (N, 1 or C + 1, 4))."""
        num_classes = scores.shape[1]
        boxes = boxes.expand(-1, num_classes, -1)
        out = []
        for b, s, shape in zip(boxes.split(sizes), scores.split(sizes), image_shapes):
            b = box_ops.clip_boxes_to_image(b, shape)[:, 1:].reshape(-1, 4)
            labels = torch.arange(1, num_classes, device=s.device).expand(s.shape[0], -1).reshape(-1)
            s = s[:, 1:].reshape(-1)
            keep = torch.where(s > self.score_thresh)[0]
            b, s, labels = b[keep], s[keep], labels[keep]
            keep = box_ops.remove_small_boxes(b, min_size=1e-2)
            b, s, labels = b[keep], s[keep], labels[keep]
            keep = box_ops.batched_nms(b, s, labels, self.nms_thresh)[: self.detections_per_img]
            out.append({"boxes": b[keep], "labels": labels[keep], "scores": s[keep]})
        return out

    def forward(
        self,
        features: Features,
        proposals: list[torch.Tensor],
        image_shapes: Shapes,
        targets: Targets | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        """torchvision's contract: (detections, losses); losses in training, detections in eval."""
        if self.training:
            return [], self._forward_train(features, proposals, image_shapes, targets)
        return self._forward_test(features, proposals, image_shapes), {}
