"""UperNet: the head's exact layer sequence (DESIGN 5.3), its forward against a functional
re-derivation, losses, SyncBatchNorm conversion, layer-decay groups, encoder initialisation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.optim import build_adamw
from ssl_backbones import export_encoder
from ssl_backbones.vit import create_vit
from transfer.segmentation.config import DataConfig, ModelConfig, SegConfig
from transfer.segmentation.loop import build_model
from transfer.segmentation.model import UperNet, build_upernet, segmentation_loss

D, C, AUX, K = 64, 32, 16, 5  # encoder width, head width, aux width, classes


def tiny(**kw) -> UperNet:
    torch.manual_seed(0)
    args = dict(channels=C, aux_channels=AUX, depth=2, embed_dim=D, num_heads=2, img_size=64, drop_path=0.0)
    args.update(kw)
    return build_upernet("vit_tiny", K, **args)


def describe(module: nn.Module) -> list[tuple]:
    """Leaf layers in registration order, as comparable tuples."""
    out = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            out.append(("conv", m.in_channels, m.out_channels, m.kernel_size[0], m.padding[0], m.bias is not None))
        elif isinstance(m, nn.BatchNorm2d):
            out.append(("bn", m.num_features))
        elif isinstance(m, nn.ReLU):
            out.append(("relu",))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            out.append(("avgpool", m.output_size))
        elif isinstance(m, nn.Dropout2d):
            out.append(("dropout2d", m.p))
        elif len(list(m.children())) == 0:
            out.append(("other", type(m).__name__))
    return out


def cbr(cin: int, cout: int, k: int) -> list[tuple]:
    # conv (no bias: BN follows; 'same' padding) - BN - ReLU
    return [("conv", cin, cout, k, k // 2, False), ("bn", cout), ("relu",)]


def test_uperhead_layer_sequence_matches_design() -> None:
    model = tiny()
    expected = []
    for s in (1, 2, 3, 6):  # PPM on level 3: pool -> 1x1 conv-BN-ReLU
        expected += [("avgpool", s)] + cbr(D, C, 1)
    expected += cbr(D + 4 * C, C, 3)  # bottleneck on [level 3, 4 PPM maps]
    expected += cbr(D, C, 1) * 3  # lateral 1x1 on levels 0..2
    expected += cbr(C, C, 3) * 3  # FPN 3x3 on levels 0..2
    expected += cbr(4 * C, C, 3)  # fpn_bottleneck on the 4 concatenated levels
    expected += [("dropout2d", 0.1), ("conv", C, K, 1, 0, True)]  # dropout, 1x1 classifier
    assert describe(model.decode_head) == expected
    assert model.decode_head.ppm.pool_scales == (1, 2, 3, 6)
    # Auxiliary FCN head on level 2: 3x3 conv-BN-ReLU (num_convs=1, no input concat), dropout, 1x1.
    assert describe(model.aux_head) == cbr(D, AUX, 3) + [("dropout2d", 0.1), ("conv", AUX, K, 1, 0, True)]
    assert model.aux_weight == 0.4


def reference_uperhead(head, feats: list[torch.Tensor]) -> torch.Tensor:
    """mmseg's UPerHead.forward order, written out with the head's layers (eval mode)."""
    up = lambda t, ref: F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
    x = feats[3]
    psp = [x] + [up(stage(x), x) for stage in head.ppm.stages]
    lats = [head.lateral_convs[i](feats[i]) for i in range(3)] + [head.bottleneck(torch.cat(psp, 1))]
    lats[2] = lats[2] + up(lats[3], lats[2])
    lats[1] = lats[1] + up(lats[2], lats[1])
    lats[0] = lats[0] + up(lats[1], lats[0])
    outs = [head.fpn_convs[i](lats[i]) for i in range(3)] + [lats[3]]
    outs = [outs[0]] + [up(o, outs[0]) for o in outs[1:]]
    return head.classifier(head.fpn_bottleneck(torch.cat(outs, 1)))


def test_uperhead_forward_matches_reference_order() -> None:
    model = tiny().eval()
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, D, 64 // s, 96 // s, generator=g) for s in (4, 8, 16, 32)]
    with torch.no_grad():
        # BN statistics that are not the identity, so a misplaced norm would show.
        for m in model.decode_head.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
        torch.testing.assert_close(model.decode_head(feats), reference_uperhead(model.decode_head, feats))


@pytest.mark.parametrize("size", [(64, 64), (70, 100)])
def test_logits_at_input_size_and_aligned_with_padding(size) -> None:
    model = tiny().eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (1, K, *size)
        # Unpadded logits are the top-left crop of the logits of the zero-padded input.
        H, W = size
        padded = F.pad(x, (0, (-W) % 32, 0, (-H) % 32))
        torch.testing.assert_close(logits, model(padded)[..., :H, :W])


def test_losses_weighting_and_ignore() -> None:
    model = tiny().train()
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, K, (2, 64, 64))
    y[:, :10] = 255
    losses = model(x, y)
    torch.testing.assert_close(losses["loss"], losses["loss_seg"] + 0.4 * losses["loss_aux"])
    logits = torch.randn(2, K, 8, 8)
    labels = torch.randint(0, K, (2, 8, 8))
    labels[0] = 255
    valid = labels != 255
    manual = -F.log_softmax(logits, 1).gather(1, labels.clamp(max=K - 1)[:, None])[:, 0][valid].mean()
    torch.testing.assert_close(segmentation_loss(logits, labels), manual)
    all_ignored = torch.full((2, 8, 8), 255)
    z = segmentation_loss(logits.requires_grad_(), all_ignored)
    assert z.item() == 0.0
    z.backward()
    assert torch.isfinite(logits.grad).all()


def test_batchnorms_convert_to_syncbn() -> None:
    model = tiny()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # Adapter (1) + UPerHead (4 PPM + bottleneck + 3 lateral + 3 fpn + fpn_bottleneck = 12) + aux (1).
    assert n_bn == 14
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in synced.modules()) == n_bn


def test_layer_decay_groups_encoder_only() -> None:
    model = tiny()
    opt = build_adamw(model, lr=1.0, weight_decay=0.05, layer_decay=0.5, num_layers=2, prefix=UperNet.ENCODER_PREFIX)
    scale = {n: g["lr_scale"] for g in opt.param_groups for n in g["param_names"]}
    assert scale["backbone.encoder.patch_embed.proj.weight"] == 0.5**3
    assert scale["backbone.encoder.blocks.0.attn.qkv.weight"] == 0.5**2
    assert scale["backbone.encoder.blocks.1.mlp.fc1.weight"] == 0.5
    assert scale["backbone.fpn1.0.weight"] == 1.0  # adapter and heads train at the full lr
    assert scale["decode_head.classifier.weight"] == 1.0
    assert "backbone.encoder.norm.weight" not in scale  # unused by the dense head: frozen


def test_drop_path_and_taps_configurable() -> None:
    model = tiny(drop_path=0.2, depth=4)
    assert model.backbone.encoder.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    # DESIGN 5.1 taps: blocks 3, 5, 7, 11 of 12 and 7, 11, 15, 23 of 24.
    assert build_upernet("vit_base", 150, depth=12, embed_dim=64, num_heads=2).backbone.out_indices == [3, 5, 7, 11]
    assert build_upernet("vit_large", 150, depth=24, embed_dim=64, num_heads=2).backbone.out_indices == [7, 11, 15, 23]


def test_build_model_loads_exported_encoder(tmp_path) -> None:
    torch.manual_seed(3)
    enc = create_vit("vit_tiny", depth=2, embed_dim=64, num_heads=2, img_size=64)
    export_encoder(enc, tmp_path / "encoder", {"method": "test"})
    cfg = SegConfig(
        model=ModelConfig(arch="vit_tiny", depth=2, embed_dim=64, num_heads=2, channels=C, aux_channels=AUX,
                          weights=str(tmp_path / "encoder.safetensors")),
        data=DataConfig(crop_size=(64, 64)),
    )
    loaded = build_model(cfg, K).backbone.encoder.state_dict()
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(loaded[k], v, msg=k)
    random = build_model(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=None)), K)
    assert not torch.equal(random.backbone.encoder.blocks[0].attn.qkv.weight, enc.blocks[0].attn.qkv.weight)
