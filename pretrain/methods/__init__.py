"""Pretraining methods (each an nn.Module holding its ViT as `.encoder`; `forward(batch) -> dict`
with `"loss"` plus detached statistics) and the factories that build one from a config."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from ssl_backbones.vit import VisionTransformer, create_vit

from ..config import DinoConfig, MaskConfig, ModelConfig
from ..masking import BlockMasking, SplitMasking, UniformMasking
from ..tokenizers import PatchTokenizer
from .beit import BEiT
from .dino import DINO
from .mae import MAE
from .splitmask import SplitMask, symmetric_info_nce

__all__ = [
    "BEiT",
    "DINO",
    "MAE",
    "METHODS",
    "SplitMask",
    "build_encoder",
    "build_masking",
    "build_method",
    "needs_tokenizer",
    "symmetric_info_nce",
]

METHODS = ("splitmask", "beit", "mae", "dino")


def needs_tokenizer(model: ModelConfig) -> bool:
    return model.method == "beit" or (model.method == "splitmask" and model.use_mim)


def build_encoder(model: ModelConfig, img_size: int) -> VisionTransformer:
    """The ViT of `model.arch` with the run's overrides; BEiT gets layer scale 0.1 unless set."""
    layer_scale = model.layer_scale
    if layer_scale is None:
        layer_scale = 0.1 if model.method == "beit" else 0.0
    overrides = {k: v for k in ("embed_dim", "depth", "num_heads") if (v := getattr(model, k)) is not None}
    return create_vit(
        model.arch,
        img_size=img_size,
        patch_size=model.patch_size,
        pos_embed=model.pos_embed,
        drop_path_rate=model.drop_path,
        init_values=layer_scale or None,
        grad_checkpointing=model.grad_checkpointing,
        **overrides,
    )


def build_method(
    model: ModelConfig,
    encoder: VisionTransformer,
    tokenizer: PatchTokenizer | None,
    dino: DinoConfig | None = None,
    weight_decay: float = 0.04,
) -> nn.Module:
    """The method of `model.method` around `encoder`. DINO reads `dino` (default: the paper's
    recipe) and the start of its weight-decay schedule, `weight_decay` (optim.weight_decay)."""
    if model.method == "splitmask":
        return SplitMask(
            encoder,
            tokenizer,
            decoder_depth=model.decoder_depth,
            tau=model.tau,
            use_mim=model.use_mim,
            use_contrastive=model.use_contrastive,
            contrastive_weight=model.contrastive_weight,
        )
    if model.method == "beit":
        if tokenizer is None:
            raise ValueError("BEiT needs a tokenizer")
        return BEiT(encoder, tokenizer)
    if model.method == "mae":
        return MAE(
            encoder,
            decoder_dim=model.mae_decoder_dim,
            decoder_depth=model.mae_decoder_depth,
            decoder_heads=model.mae_decoder_heads,
            mask_ratio=model.mae_mask_ratio,
            norm_pix_loss=model.norm_pix_loss,
        )
    if model.method == "dino":
        d = dino or DinoConfig()
        return DINO(
            encoder,
            out_dim=d.out_dim,
            hidden_dim=d.hidden_dim,
            bottleneck_dim=d.bottleneck_dim,
            student_temp=d.student_temp,
            teacher_temp=d.teacher_temp,
            warmup_teacher_temp=d.warmup_teacher_temp,
            warmup_teacher_temp_epochs=d.warmup_teacher_temp_epochs,
            center_momentum=d.center_momentum,
            momentum_teacher=d.momentum_teacher,
            weight_decay=weight_decay,
            weight_decay_end=d.weight_decay_end,
            freeze_last_layer_epochs=d.freeze_last_layer_epochs,
        )
    raise ValueError(f"unknown method {model.method!r}; choose one of {METHODS}")


def build_masking(
    method: str, mask: MaskConfig, grid: tuple[int, int], small_recipe: bool = False
) -> Callable[[np.random.Generator], dict[str, torch.Tensor]] | None:
    """The per-image mask made in the data workers for `method` (None for MAE: it masks on the device;
    None for DINO: it masks nothing)."""
    kind = mask.kind
    if kind == "auto":
        kind = "uniform" if small_recipe else "block"
    if method == "splitmask":
        return SplitMasking(grid, kind, mask.uniform_ratio, mask.min_block, mask.max_block)
    if method == "beit":
        if kind == "uniform":
            return UniformMasking(grid, mask.uniform_ratio)
        return BlockMasking(grid, mask.beit_num_masked, mask.min_block, mask.max_block)
    if method in ("mae", "dino"):
        return None
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
