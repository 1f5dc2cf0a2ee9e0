"""Mask R-CNN on a tiny ViT: losses, resizing contract, output coordinates, param groups, weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from engine.optim import build_adamw
from ssl_backbones import ArchitectureMismatchError, export_encoder
from ssl_backbones.vit import create_vit
from transfer.detection.config import ModelConfig
from transfer.detection.model import ENCODER_PREFIX, IMAGENET_MEAN, build_mask_rcnn, encoder_of

TINY = ModelConfig(arch="vit_tiny", embed_dim=64, depth=2, num_heads=2, drop_path=0.1, weights=None,
                   fpn_channels=32, box_head_dim=64, mask_head_channels=32, rpn_batch_size=64, roi_batch_size=32)
LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


def _batch() -> tuple[list[torch.Tensor], list[dict]]:
    images = [torch.rand(3, 70, 100), torch.rand(3, 64, 64)]
    masks = torch.zeros(1, 70, 100, dtype=torch.uint8)
    masks[0, 10:40, 20:60] = 1
    targets = [
        {"boxes": torch.tensor([[20.0, 10.0, 60.0, 40.0]]), "labels": torch.tensor([2]), "masks": masks},
        # An image without objects: torchvision supports empty targets.
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
         "masks": torch.zeros(0, 64, 64, dtype=torch.uint8)},
    ]
    return images, targets


@pytest.mark.parametrize("adapter", ["maxpool_deconv", "simple_fpn"])
def test_training_step_and_predictions(adapter: str) -> None:
    torch.manual_seed(0)
    model = build_mask_rcnn(dataclasses.replace(TINY, adapter=adapter), num_classes=3, test_size=64, test_max_size=128)
    seen: list[tuple[int, int]] = []
    model.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    images, targets = _batch()

    model.train()
    losses = model(images, targets)
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    enc = encoder_of(model)
    assert enc.blocks[0].attn.qkv.weight.grad.abs().sum() > 0 and enc.patch_embed.proj.weight.grad is not None
    # Training images are not resized by the model (the data pipeline did it): only padded to 32.
    assert seen[-1] == (96, 128)

    model.eval()
    with torch.no_grad():
        (out,) = model([images[0]])
    # Evaluation: resized to short side 64 (70x100 -> 64x91, padded to 64x96) ...
    assert seen[-1] == (64, 96)
    # ... and predictions come back in the input image's coordinates, masks at its full size.
    assert out["masks"].shape[1:] == (1, 70, 100)
    if len(out["boxes"]):
        assert float(out["boxes"][:, 2].max()) <= 100 + 1e-3 and float(out["boxes"][:, 3].max()) <= 70 + 1e-3
    assert model.transform.image_mean == list(IMAGENET_MEAN) and model.transform.size_divisible == 32


def test_detection_limits_and_heads_follow_the_config() -> None:
    model = build_mask_rcnn(dataclasses.replace(TINY, anchor_sizes=(16, 32, 64, 128, 256)), num_classes=5,
                            detections_per_image=300, score_threshold=0.02)
    assert model.rpn.anchor_generator.sizes == ((16,), (32,), (64,), (128,), (256,))
    assert model.rpn.anchor_generator.num_anchors_per_location() == [3] * 5
    assert model.roi_heads.detections_per_img == 300 and model.roi_heads.score_thresh == 0.02
    assert model.roi_heads.box_predictor.cls_score.out_features == 6  # + background
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 6
    assert model.backbone.out_channels == TINY.fpn_channels
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == TINY.roi_batch_size


def test_layer_decay_groups_reach_the_encoder() -> None:
    model = build_mask_rcnn(TINY, num_classes=3)
    opt = build_adamw(model, lr=1e-4, weight_decay=0.05, layer_decay=0.5, num_layers=2, prefix=ENCODER_PREFIX)
    by_name = {n: g for g in opt.param_groups for n in g["param_names"]}
    assert by_name[f"{ENCODER_PREFIX}.blocks.0.attn.qkv.weight"]["lr_scale"] == pytest.approx(0.5**2)
    assert by_name[f"{ENCODER_PREFIX}.blocks.1.mlp.fc1.weight"]["lr_scale"] == pytest.approx(0.5)
    assert by_name[f"{ENCODER_PREFIX}.patch_embed.proj.weight"]["lr_scale"] == pytest.approx(0.5**3)
    assert by_name["roi_heads.box_head.fc6.weight"]["lr_scale"] == 1.0
    assert by_name["roi_heads.box_head.fc6.weight"]["weight_decay"] == 0.05
    # No weight decay on norms, biases and the cls token.
    for name in (f"{ENCODER_PREFIX}.blocks.0.norm1.weight", f"{ENCODER_PREFIX}.cls_token", "backbone.fpn.inner_blocks.0.0.bias"):
        assert by_name[name]["weight_decay"] == 0.0
    # sin-cos positions are fixed: not optimised at all.
    assert f"{ENCODER_PREFIX}.pos_embed" not in by_name


def test_encoder_weights_through_the_checkpoint_loader(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_vit("vit_tiny", embed_dim=64, depth=2, num_heads=2, img_size=64)
    path = export_encoder(source, tmp_path / "encoder", meta={"method": "test", "dataset": "none"})
    model = build_mask_rcnn(dataclasses.replace(TINY, weights=str(path)), num_classes=3)
    loaded = encoder_of(model).state_dict()
    for k, v in source.state_dict().items():
        if k != "pos_embed":  # sin-cos table of the detector's own grid
            assert torch.equal(loaded[k], v), k
    with pytest.raises(FileNotFoundError, match="--weights"):
        build_mask_rcnn(dataclasses.replace(TINY, weights=str(tmp_path / "missing.pth")), num_classes=3)
    with pytest.raises(ArchitectureMismatchError):
        build_mask_rcnn(dataclasses.replace(TINY, weights=str(path), embed_dim=96, num_heads=3), num_classes=3)
