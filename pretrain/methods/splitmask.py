"""SplitMask: split the patches into two disjoint subsets, inpaint each from the other, match the two
global descriptors (El-Nouby et al., "Are Large-scale Datasets Necessary for Self-Supervised
Pre-training?", sections 4.1-4.3; DESIGN 4.3).

Per image with n patches and subsets A, B of K patches each (K = n/2 by default, complementary):

1. patch-embed + absolute positions (`encoder.embed`), gather A and B;
2. the shared encoder runs A and B as one batch of 2B sequences of K tokens (never sees a mask token);
3. per branch, a 2-block decoder of encoder width reads n tokens: the branch's encoded tokens at their
   own positions and a learned mask token + position embedding at every position the branch did not
   see; a linear head predicts the visual word (tokenizer id) of those unseen patches: A predicts B's
   words and B predicts A's, so the loss covers every patch;
4. global descriptor per branch = average of its n decoder outputs (after the decoder norm);
   symmetric InfoNCE (tau 0.2) between the two branches of each image, negatives = the other
   images of the global (all-gathered) batch.

Design choice: the encoder's cls token output is dropped before the decoder, so the decoder sequence
is exactly the n patch positions and the descriptor averages exactly the n patch outputs, as the
paper describes. The cls token is still trained through attention inside the encoder.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.distributed import all_gather_with_grad, get_rank, get_world_size
from ssl_backbones.vit import VisionTransformer

from ..tokenizers import PatchTokenizer
from .common import init_head_weights, target_word_stats, transformer_blocks


def symmetric_info_nce(
    desc_a: torch.Tensor, desc_b: torch.Tensor, tau: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between two views' descriptors; negatives come from the global batch.

    Args:
        desc_a, desc_b: (B, D) descriptors of the same B images from branch A and branch B.
        tau: temperature.
    Returns:
        loss: 0.5 * (CE(a_i vs all b) + CE(b_i vs all a)), each averaged over the local images, with
            the descriptors L2-normalised and the candidates gathered from every rank (labels offset
            by rank * B); acc: fraction of local images (over both directions) whose positive wins.
    """
    za = F.normalize(desc_a.float(), dim=1)
    zb = F.normalize(desc_b.float(), dim=1)
    all_a, all_b = all_gather_with_grad(za), all_gather_with_grad(zb)
    labels = torch.arange(za.shape[0], device=za.device) + get_rank() * za.shape[0]
    logits_ab = za @ all_b.T / tau  # (B, world * B)
    logits_ba = zb @ all_a.T / tau
    loss = 0.5 * (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels))
    acc = 0.5 * (
        (logits_ab.argmax(1) == labels).float().mean() + (logits_ba.argmax(1) == labels).float().mean()
    )
    return loss, acc


class SplitMask(nn.Module):
    """SplitMask around a ViT encoder.

    Args:
        encoder: the ViT (kept as `self.encoder`; its keys are what transfer loads).
        tokenizer: visual-word targets; may be None only when `use_mim` is False.
        decoder_depth: decoder blocks (2 in the paper); width = encoder width.
        decoder_heads: decoder attention heads (default: the encoder's).
        tau: InfoNCE temperature (0.2).
        use_mim, use_contrastive: Table 8 ablations (Split+Inpaint = no contrastive,
            Split+Match = no MIM).
        contrastive_weight: weight of the InfoNCE term in the total loss.

    Batch: `{"images": (B, 3, H, W), "ids_a": (B, K) long, "ids_b": (B, K) long}` (sorted patch indices,
    disjoint; see `pretrain.masking.SplitMasking`).
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        tokenizer: PatchTokenizer | None,
        decoder_depth: int = 2,
        decoder_heads: int | None = None,
        tau: float = 0.2,
        use_mim: bool = True,
        use_contrastive: bool = True,
        contrastive_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if not (use_mim or use_contrastive):
            raise ValueError("SplitMask needs at least one of use_mim / use_contrastive")
        if use_mim and tokenizer is None:
            raise ValueError("SplitMask with use_mim needs a tokenizer")
        if tokenizer is not None and tokenizer.token_stride != encoder.patch_size:
            raise ValueError(
                f"tokenizer covers {tokenizer.token_stride} px per token but the ViT patch is {encoder.patch_size}"
            )
        dim = encoder.embed_dim
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.tau = tau
        self.use_mim = use_mim
        self.use_contrastive = use_contrastive
        self.contrastive_weight = contrastive_weight
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder = transformer_blocks(dim, decoder_depth, decoder_heads or encoder.num_heads)
        self.decoder_norm = nn.LayerNorm(dim, eps=1e-6)
        # No head when MIM is off, so DDP sees no unused parameters.
        self.head = nn.Linear(dim, tokenizer.vocab_size) if use_mim else None
        init_head_weights(self.decoder)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        if self.head is not None:
            nn.init.trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    def encode_subsets(
        self, images: torch.Tensor, ids_a: torch.Tensor, ids_b: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """Encoder outputs of both subsets, run as one batch.

        Returns:
            (2B, K, D): rows [0, B) are subset A of each image, rows [B, 2B) subset B (cls dropped);
            and the patch grid (h, w).
        """
        tokens, grid = self.encoder.embed(images)
        subsets = torch.cat([self.encoder.gather(tokens, ids_a), self.encoder.gather(tokens, ids_b)])
        return self.encoder.forward_tokens(subsets)[:, self.encoder.num_prefix_tokens :], grid

    def decode(self, encoded: torch.Tensor, ids: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Decoder over all n positions for each branch.

        Args:
            encoded: (2B, K, D) encoder outputs; ids: (2B, K) their patch indices.
        Returns:
            (2B, n, D) decoder outputs after the decoder norm.
        """
        n2b, _, dim = encoded.shape
        pos = self.encoder.patch_pos_embed(grid, encoded.device).to(encoded.dtype)  # (1, n, D)
        filler = (self.mask_token.to(encoded.dtype) + pos).expand(n2b, -1, -1)
        # Encoded tokens already carry their positions (added before the encoder); the mask tokens
        # get theirs here. One scatter places each branch's tokens, no loop over images.
        x = torch.scatter(filler, 1, ids.unsqueeze(-1).expand(-1, -1, dim), encoded)
        for blk in self.decoder:
            x = blk(x)
        return self.decoder_norm(x)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, ids_a, ids_b = batch["images"], batch["ids_a"], batch["ids_b"]
        B = images.shape[0]
        encoded, grid = self.encode_subsets(images, ids_a, ids_b)
        ids = torch.cat([ids_a, ids_b])  # (2B, K)
        decoded = self.decode(encoded, ids, grid)  # (2B, n, D)
        n, K = decoded.shape[1], ids.shape[1]
        out: dict[str, torch.Tensor] = {}
        loss = decoded.new_zeros((), dtype=torch.float32)

        if self.use_mim:
            # Positions each branch did not see, in increasing order (stable sort puts unseen first).
            # With the complementary split these are exactly the other branch's ids.
            seen = torch.zeros(2 * B, n, dtype=torch.uint8, device=ids.device).scatter_(1, ids, 1)
            unseen = torch.argsort(seen, dim=1, stable=True)[:, : n - K]  # (2B, n - K)
            logits = self.head(self.encoder.gather(decoded, unseen)).float()  # (2B, n-K, V)
            words = self.tokenizer(images)  # (B, n)
            targets = torch.gather(torch.cat([words, words]), 1, unseen)
            mim_loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            loss = loss + mim_loss
            out["mim_loss"] = mim_loss.detach()
            out["mim_acc"] = (logits.argmax(-1) == targets).float().mean().detach()
            out.update(target_word_stats(targets))

        if self.use_contrastive:
            desc_a, desc_b = decoded.mean(dim=1).chunk(2)
            con_loss, con_acc = symmetric_info_nce(desc_a, desc_b, self.tau)
            loss = loss + self.contrastive_weight * con_loss
            out["contrastive_loss"] = con_loss.detach()
            out["contrastive_acc"] = con_acc.detach()
            # Chance level of contrastive_acc: one positive among the global batch's B * world candidates.
            out["contrastive_chance"] = torch.tensor(1.0 / (B * get_world_size()), device=loss.device)

        out["loss"] = loss
        return out
