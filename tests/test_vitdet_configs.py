"""The ViTDet config files: the recipe's options resolve to ViTDet's architecture, other configs keep theirs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine.config import load_config
from ssl_backbones.window_attention import RelPosBlock
from transfer.detection.model import build_encoder

CONFIGS = Path(__file__).resolve().parents[1] / "det_configs"
VITDET = sorted(p.name for p in CONFIGS.glob("*vitdet*.py"))


def test_vitdet_configs_exist_for_every_size_and_task() -> None:
    for task in ("mask_rcnn", "cascade_mask_rcnn", "lvis_mask_rcnn", "lvis_cascade_mask_rcnn"):
        assert len([n for n in VITDET if n.startswith(task + "_vitdet")]) == 3, task


@pytest.mark.parametrize("name", VITDET)
def test_vitdet_config_options(name: str) -> None:
    cfg = load_config(name, [CONFIGS])
    m = cfg.model
    assert (m.patch_only, m.window_size, m.rel_pos, m.rel_pos_grid, m.heads) == (True, 14, "decomposed", 64, "vitdet")
    assert (m.adapter, cfg.data.policy, cfg.data.lsj_size) == ("simple_fpn", "lsj", 1024)
    assert m.cascade == ("cascade" in name)
    lvis = name.startswith("lvis")
    assert (cfg.data.kind == "lvis") == lvis and (m.cls_loss == "federated") == lvis
    if lvis:
        assert (cfg.eval.detections_per_image, cfg.eval.score_threshold, m.fed_loss_classes) == (300, 0.02, 50)
        assert cfg.data.repeat_factor_threshold == 0.001
    decay = {"vit_base": 0.7, "vit_large": 0.8, "vit_huge": 0.9}[m.arch]
    assert cfg.optim.layer_decay == decay


def test_vitdet_b_encoder_has_vitdet_global_blocks_and_tables() -> None:
    cfg = load_config("mask_rcnn_vitdet_b_100ep.py", [CONFIGS]).model
    enc = build_encoder(dataclasses.replace(cfg, weights=None))
    assert enc.global_blocks == (2, 5, 8, 11) and enc.patch_only
    for i, blk in enumerate(enc.blocks):
        assert isinstance(blk, RelPosBlock)
        glob = i in (2, 5, 8, 11)
        assert blk.window_size == (0 if glob else 14)
        assert tuple(blk.attn.rel_pos_h.shape) == ((127 if glob else 27), 64)
        assert not blk.attn.rel_pos_h.detach().any()  # zero-initialised


def test_splitmask_paper_configs_keep_todays_model() -> None:
    for name in sorted(p.name for p in CONFIGS.glob("[!_]*.py")):
        if "vitdet" in name:
            continue
        m = load_config(name, [CONFIGS]).model
        assert (m.patch_only, m.window_size, m.rel_pos, m.heads, m.cascade, m.cls_loss) == (
            False, 0, "none", "torchvision", False, "softmax"), name
