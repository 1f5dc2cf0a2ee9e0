"""Pretraining methods (each an nn.Module holding its ViT as `.encoder`; `forward(batch) -> dict`
with `"loss"` plus detached statistics) and the factories that build one from a config."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from ssl_backbones.vit import VisionTransformer, create_vit

from ..config import MaskConfig, ModelConfig
from ..masking import BlockMasking, SplitMasking, UniformMasking
from ..tokenizers import PatchTokenizer
from .beit import BEiT
from .mae import MAE
from .splitmask import SplitMask, symmetric_info_nce

__all__ = [
    "BEiT",
    "MAE",
    "METHODS",
    "SplitMask",
    "build_encoder",
    "build_masking",
    "build_method",
    "needs_tokenizer",
    "symmetric_info_nce",
]

METHODS = ("splitmask", "beit", "mae")


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
    model: ModelConfig, encoder: VisionTransformer, tokenizer: PatchTokenizer | None
) -> nn.Module:
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
    raise ValueError(f"unknown method {model.method!r}; choose one of {METHODS}")


def build_masking(
    method: str, mask: MaskConfig, grid: tuple[int, int], small_recipe: bool = False
) -> Callable[[np.random.Generator], dict[str, torch.Tensor]] | None:
    """The per-image mask made in the data workers for `method` (None for MAE: it masks on the device)."""
    kind = mask.kind
    if kind == "auto":
        kind = "uniform" if small_recipe else "block"
    if method == "splitmask":
        return SplitMasking(grid, kind, mask.uniform_ratio, mask.min_block, mask.max_block)
    if method == "beit":
        if kind == "uniform":
            return UniformMasking(grid, mask.uniform_ratio)
        return BlockMasking(grid, mask.beit_num_masked, mask.min_block, mask.max_block)
    if method == "mae":
        return None
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
