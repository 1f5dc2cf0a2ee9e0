"""BEiT with a training-free tokenizer (Bao et al.; DESIGN 4.3).

The encoder sees every patch; block-masked patches (~40%: 75 of 196, min block 16) have their patch
embedding replaced by a learned mask token *before* the position embedding is added, so the model
knows where each masked patch is. A linear head on the encoder output predicts the visual word of
each masked patch (cross-entropy). The encoder is built with layer scale 0.1 (`init_values=0.1`) by
the method factory; absolute positions as everywhere else in this project (no relative bias).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ssl_backbones.vit import VisionTransformer

from ..tokenizers import PatchTokenizer
from .common import target_word_stats


class BEiT(nn.Module):
    """Masked image modelling over visual words with a ViT that sees mask tokens.

    Batch: `{"images": (B, 3, H, W), "mask": (B, n) bool}` (True = masked; see
    `pretrain.masking.BlockMasking`).
    """

    def __init__(self, encoder: VisionTransformer, tokenizer: PatchTokenizer) -> None:
        super().__init__()
        if tokenizer.token_stride != encoder.patch_size:
            raise ValueError(
                f"tokenizer covers {tokenizer.token_stride} px per token but the ViT patch is {encoder.patch_size}"
            )
        dim = encoder.embed_dim
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.head = nn.Linear(dim, tokenizer.vocab_size)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def encode_masked(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encoder output of the patch tokens with masked patches replaced: (B, n, D), cls dropped."""
        tokens, grid = self.encoder.patch_embed(images)
        w = mask.unsqueeze(-1).to(tokens.dtype)
        tokens = tokens * (1 - w) + self.mask_token.to(tokens.dtype) * w
        tokens = tokens + self.encoder.patch_pos_embed(grid, tokens.device).to(tokens.dtype)
        return self.encoder.forward_tokens(tokens)[:, self.encoder.num_prefix_tokens :]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, mask = batch["images"], batch["mask"].bool()
        encoded = self.encode_masked(images, mask)
        # Boolean selection (one op): the head and the loss run on masked patches only.
        logits = self.head(encoded[mask]).float()  # (M, V)
        if logits.shape[0] == 0:
            raise ValueError("BEiT batch has no masked patch; check the masking settings for this image size")
        targets = self.tokenizer(images)[mask]  # (M,)
        loss = F.cross_entropy(logits, targets)
        return {
            "loss": loss,
            "mim_loss": loss.detach(),
            "mim_acc": (logits.argmax(-1) == targets).float().mean().detach(),
            **target_word_stats(targets),
        }
