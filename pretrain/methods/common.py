"""Pieces the pretraining methods share: decoder blocks, their initialisation, MIM target statistics."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block


def transformer_blocks(dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0) -> nn.ModuleList:
    """`depth` pre-norm ViT blocks (timm's Block: SDPA attention, qkv bias, LayerNorm eps 1e-6)."""
    return nn.ModuleList(
        Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
        for _ in range(depth)
    )


def init_head_weights(module: nn.Module) -> None:
    """MAE-style init for the method-owned parts: xavier linears, zero biases, unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@torch.no_grad()
def target_word_stats(targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """What `mim_acc` is to be read against: the statistics of the batch's target words.

    Args:
        targets: visual-word ids of the predicted patches, any shape, long.
    Returns:
        {"mim_unigram_acc": the accuracy of always predicting the batch's most frequent word (its
        frequency), "mim_target_entropy": entropy of the batch's word distribution in nats}; 0-dim
        float tensors, detached. A `mim_acc` near the unigram accuracy means the head predicts
        frequent words, not the masked content.
    """
    counts = torch.bincount(targets.flatten()).float()
    p = counts / counts.sum()
    return {"mim_unigram_acc": p.max(), "mim_target_entropy": -torch.special.xlogy(p, p).sum()}
