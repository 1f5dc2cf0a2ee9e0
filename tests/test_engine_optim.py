"""Layer-wise lr decay table and weight-decay exclusions, checked by hand for a 12-block ViT."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from engine.optim import build_adamw, clip_grad, infer_num_layers, param_groups, vit_layer_id


def _vit12() -> nn.Module:
    # Narrow but 12 blocks deep, so the table covers a ViT-B-like depth cheaply.
    return timm.create_model(
        "vit_base_patch16_224",
        pretrained=False,
        embed_dim=32,
        depth=12,
        num_heads=2,
        img_size=32,
        num_classes=5,
    )


def _scale_by_name(groups: list[dict]) -> dict[str, float]:
    return {n: g["lr_scale"] for g in groups for n in g["param_names"]}


def _wd_by_name(groups: list[dict]) -> dict[str, float]:
    return {n: g["weight_decay"] for g in groups for n in g["param_names"]}


def test_layer_decay_table_12_blocks() -> None:
    model = _vit12()
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.65, num_layers=12)
    scale = _scale_by_name(groups)
    d = 0.65
    assert scale["patch_embed.proj.weight"] == pytest.approx(d**13)
    assert scale["cls_token"] == pytest.approx(d**13)
    assert scale["pos_embed"] == pytest.approx(d**13)
    assert scale["blocks.0.attn.qkv.weight"] == pytest.approx(d**12)
    assert scale["blocks.0.norm1.bias"] == pytest.approx(d**12)
    assert scale["blocks.5.mlp.fc2.weight"] == pytest.approx(d**7)
    assert scale["blocks.11.mlp.fc1.weight"] == pytest.approx(d**1)
    assert scale["norm.weight"] == pytest.approx(1.0)
    assert scale["head.weight"] == pytest.approx(1.0)
    # every trainable parameter is in exactly one group
    names = [n for g in groups for n in g["param_names"]]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    # one group per (layer id, decay / no decay): 14 layer ids x 2
    assert len(groups) == 28
    assert len({(g["layer_id"], g["weight_decay"]) for g in groups}) == len(groups)


def test_no_weight_decay_set() -> None:
    model = _vit12()
    wd = _wd_by_name(param_groups(model, weight_decay=0.05, layer_decay=0.65))
    no_decay = {n for n, v in wd.items() if v == 0.0}
    expected = {n for n, p in model.named_parameters() if p.ndim == 1} | {"cls_token", "pos_embed"}
    assert no_decay == expected
    assert "blocks.3.norm2.weight" in no_decay and "head.bias" in no_decay
    assert wd["blocks.3.attn.qkv.weight"] == 0.05 and wd["patch_embed.proj.weight"] == 0.05


def test_prefixed_encoder_inside_detector() -> None:
    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Module()
            self.backbone.body = nn.Module()
            self.backbone.body.encoder = _vit12()
            self.backbone.body.encoder.pos_embed.requires_grad_(False)  # sincos: frozen
            self.roi_heads = nn.Linear(4, 4)
            self.decoder_blocks = nn.ModuleList([nn.Linear(4, 4)])  # not an encoder block

    model = Detector()
    enc = "backbone.body.encoder."
    for prefix in ("backbone.body.encoder", None):
        groups = param_groups(model, 0.05, layer_decay=0.5, num_layers=12, prefix=prefix)
        scale = _scale_by_name(groups)
        assert scale[enc + "blocks.3.attn.proj.weight"] == pytest.approx(0.5**9)
        assert scale[enc + "patch_embed.proj.bias"] == pytest.approx(0.5**13)
        assert scale["roi_heads.weight"] == 1.0
        assert scale["decoder_blocks.0.weight"] == 1.0
        assert enc + "pos_embed" not in scale  # requires_grad=False is skipped
    assert infer_num_layers(model, prefix="backbone.body.encoder") == 12
    assert vit_layer_id("neck.blocks.2.weight", 12, prefix="backbone.body.encoder") == 13
    with pytest.raises(ValueError, match="num_layers"):
        vit_layer_id("blocks.12.attn.qkv.weight", 12)


def test_without_layer_decay_two_groups() -> None:
    model = _vit12()
    groups = param_groups(model, weight_decay=0.1)
    assert len(groups) == 2
    assert {g["weight_decay"] for g in groups} == {0.0, 0.1}
    assert all(g["lr_scale"] == 1.0 for g in groups)


def test_build_adamw_initial_lrs_and_state_dict() -> None:
    model = _vit12()
    opt = build_adamw(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), layer_decay=0.75)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])
        assert g["betas"] == (0.9, 0.95)
    # param_names survive a state-dict round trip (torch keeps them)
    sd = opt.state_dict()
    assert sd["param_groups"][0]["param_names"] == opt.param_groups[0]["param_names"]


def test_clip_grad_returns_pre_clip_norm() -> None:
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    assert clip_grad([p], None).item() == pytest.approx(5.0)
    assert torch.equal(p.grad, torch.tensor([3.0, 4.0, 0.0]))
    assert clip_grad([p], 1.0).item() == pytest.approx(5.0)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
