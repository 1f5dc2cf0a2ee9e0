"""Cascade R-CNN heads on torchvision's RoIHeads, ViTDet's heads, and a tiny Cascade Mask R-CNN run."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead

from engine.config import apply_overrides, load_config
from transfer.detection.cascade import CASCADE_BOX_WEIGHTS, CascadeRoIHeads, scale_gradient
from transfer.detection.config import ModelConfig
from transfer.detection.model import build_mask_rcnn

REPO = Path(__file__).resolve().parents[1]
TINY = dict(arch="vit_tiny", embed_dim=64, depth=2, num_heads=2, fpn_channels=32, box_head_dim=64,
            mask_head_channels=32, roi_batch_size=64, drop_path=0.0)


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, 96, 128, generator=g), torch.rand(3, 128, 96, generator=g)]
    targets = []
    for img in images:
        H, W = img.shape[-2:]
        boxes = torch.tensor([[10.0, 12.0, 60.0, 70.0], [30.0, 20.0, 90.0, 50.0]])
        masks = torch.zeros(2, H, W, dtype=torch.uint8)
        masks[0, 12:70, 10:60] = 1
        masks[1, 20:50, 30:90] = 1
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 3]), "masks": masks})
    return images, targets


def _heads_input(model, images, targets=None):
    """Backbone features and RPN proposals, as torchvision's GeneralizedRCNN computes them."""
    image_list, targets = model.transform(images, targets)
    features = model.backbone(image_list.tensors)
    proposals, _ = model.rpn(image_list, features, targets)
    return features, [p.detach() for p in proposals], image_list.image_sizes, targets


def _single_stage(rh, **kw) -> CascadeRoIHeads:
    return CascadeRoIHeads(
        rh.box_roi_pool, [rh.box_head], [rh.box_predictor], stage_ious=(0.5,), stage_box_weights=((10, 10, 5, 5),),
        mask_roi_pool=rh.mask_roi_pool, mask_head=rh.mask_head, mask_predictor=rh.mask_predictor,
        batch_size_per_image=rh.fg_bg_sampler.batch_size_per_image, score_thresh=rh.score_thresh,
        nms_thresh=rh.nms_thresh, detections_per_img=rh.detections_per_img, **kw,
    )


def test_one_stage_at_iou_05_equals_torchvision_mask_rcnn_heads() -> None:
    torch.manual_seed(0)
    model = build_mask_rcnn(ModelConfig(**TINY), num_classes=3, test_size=96, test_max_size=160,
                            score_threshold=0.0)
    rh = model.roi_heads
    cascade = _single_stage(rh)
    assert set(cascade.state_dict()) == set(rh.state_dict())  # same checkpoint layout
    images, targets = _inputs()
    model.train()
    features, proposals, sizes, tgts = _heads_input(model, images, targets)
    torch.manual_seed(1)  # the proposal sampler draws from the global generator
    _, ref = rh(features, proposals, sizes, tgts)
    torch.manual_seed(1)
    cascade.train()
    _, got = cascade(features, proposals, sizes, tgts)
    assert set(got) == {"loss_classifier", "loss_box_reg", "loss_mask"}
    for k in ref:
        torch.testing.assert_close(got[k], ref[k])
    model.eval()
    cascade.eval()
    with torch.no_grad():
        features, proposals, sizes, _ = _heads_input(model, images)
        ref_det, _ = rh(features, proposals, sizes)
        got_det, _ = cascade(features, proposals, sizes)
    assert len(ref_det[0]["boxes"]) > 0
    for r, g in zip(ref_det, got_det):
        for k in ("boxes", "labels", "scores", "masks"):
            torch.testing.assert_close(g[k], r[k])


def test_cascade_scores_average_the_stages_and_boxes_come_from_the_last() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(**TINY, heads="vitdet", cascade=True)
    model = build_mask_rcnn(cfg, num_classes=3, test_size=96, test_max_size=160).eval()
    rh = model.roi_heads
    rh.score_thresh, rh.nms_thresh, rh.detections_per_img = -1.0, 1.0, 10**6  # keep every (RoI, class)
    images, _ = _inputs()
    with torch.no_grad():
        features, proposals, sizes, _ = _heads_input(model, images)
        dets, _ = rh(features, proposals, sizes)
        # By hand: stage k refines stage k-1's boxes; scores are the mean of the softmaxes.
        props, probs = proposals, []
        heads = [rh.box_head, *rh.extra_box_heads]
        preds = [rh.box_predictor, *rh.extra_box_predictors]
        for k, w in enumerate(CASCADE_BOX_WEIGHTS):
            logits, deltas = preds[k](heads[k](rh.box_roi_pool(features, props, sizes)))
            probs.append(F.softmax(logits, -1))
            boxes = det_utils.BoxCoder(w).decode(deltas, props)[:, 0]
            props = [b.clamp(min=0).minimum(torch.tensor([s[1], s[0], s[1], s[0]])) for b, s in
                     zip(boxes.split([len(p) for p in props]), sizes)]
        mean = torch.stack(probs).mean(0)[:, 1:]
    got = torch.cat([d["scores"] for d in dets]).sort().values
    n0 = len(proposals[0])
    expected = torch.cat([mean[:n0].reshape(-1), mean[n0:].reshape(-1)]).sort().values
    assert len(got) == len(expected)  # nothing dropped: no tiny boxes at these sizes
    torch.testing.assert_close(got, expected)
    last = torch.cat(props)  # the final boxes are the last stage's, one per RoI for every class
    dist = (dets[0]["boxes"][:, None] - last[:n0][None]).abs().amax(-1).amin(1)
    assert dist.max() < 1e-4


def test_later_stages_relabel_at_their_own_iou() -> None:
    torch.manual_seed(0)
    model = build_mask_rcnn(ModelConfig(**TINY, cascade=True), num_classes=3)
    rh = model.roi_heads
    gt = {"boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0]]), "labels": torch.tensor([2])}
    # IoU 0.65 and 0.75 with the ground truth
    props = [torch.tensor([[0.0, 0.0, 100.0, 65.0], [0.0, 0.0, 100.0, 75.0]])]
    labels1, _ = rh._label(props, [gt], 1)
    labels2, targets2 = rh._label(props, [gt], 2)
    assert labels1[0].tolist() == [2, 2] and labels2[0].tolist() == [0, 2]
    # regression target with stage 2's weights (30, 30, 15, 15): dy = 30 * (50 - 37.5) / 75
    torch.testing.assert_close(targets2[1], torch.tensor([0.0, 30 * 12.5 / 75, 0.0, 15 * torch.log(torch.tensor(100 / 75)).item()]))


def test_scale_gradient_is_identity_forward_and_scales_backward() -> None:
    x = torch.randn(5, requires_grad=True)
    y = scale_gradient(x, 1 / 3)
    torch.testing.assert_close(y, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full((5,), 1 / 3))


def test_vitdet_heads_are_torchvision_modules_with_layernorm() -> None:
    model = build_mask_rcnn(ModelConfig(**TINY, heads="vitdet"), num_classes=3)
    assert len(model.rpn.head.conv) == 2
    assert isinstance(model.roi_heads.box_head, FastRCNNConvFCHead)
    assert sum(isinstance(m, LayerNorm2d) for m in model.roi_heads.box_head.modules()) == 4
    assert sum(isinstance(m, LayerNorm2d) for m in model.roi_heads.mask_head.modules()) == 4
    assert sum(isinstance(m, torch.nn.Linear) for m in model.roi_heads.box_head.modules()) == 1
    default = build_mask_rcnn(ModelConfig(**TINY), num_classes=3)
    assert len(default.rpn.head.conv) == 1 and type(default.roi_heads).__name__ == "RoIHeads"


@pytest.mark.slow
def test_tiny_vitdet_cascade_mask_rcnn_trains_and_evaluates(demo_coco: Path, tmp_path: Path) -> None:
    from transfer.detection.loop import train

    cfg = load_config("demo_mask_rcnn_vit_tiny.py", [REPO / "det_configs"])
    cfg = apply_overrides(cfg, [
        f"data.root={demo_coco}", f"run.output_dir={tmp_path}",
        "model.embed_dim=64", "model.depth=2", "model.num_heads=2",
        "model.fpn_channels=32", "model.box_head_dim=64", "model.mask_head_channels=32",
        "model.patch_only=True", "model.window_size=3", "model.global_blocks=(1,)", "model.rel_pos=decomposed",
        "model.adapter=simple_fpn", "model.heads=vitdet", "model.cascade=True",
        "data.train_sizes=(96,128)", "data.crop_pre_sizes=(96,)", "data.crop_size=(64,96)", "data.max_size=192",
        "data.test_size=96", "data.test_max_size=160", "data.num_workers=0",
        "solver.batch_size=2", "solver.max_iters=2", "optim.warmup_steps=1",
        "eval.max_images=4", "run.log_every=1", "run.device=cpu",
    ])
    assert cfg.model.cascade and cfg.model.window_size == 3
    log = logging.getLogger("target_ssl")
    propagate, handlers, level = log.propagate, list(log.handlers), log.level
    try:
        result = train(dataclasses.replace(cfg))
    finally:  # train() installs its own handlers and stops propagation; later tests use caplog
        for h in log.handlers:
            if h not in handlers:
                h.close()
        log.handlers[:] = handlers
        log.propagate = propagate
        log.setLevel(level)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [x for x in lines if "loss" in x]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(x["loss"])) for x in losses)
    assert 0.0 <= result["bbox_AP"] <= 100.0 and 0.0 <= result["segm_AP"] <= 100.0
