"""Training-free patch tokenizers: the visual words BEiT and SplitMask predict (DESIGN 4.2).

A vocabulary is V unit vectors e_i in R^d over 8 x 8 patches of the image downsampled 2x (one token per
16 x 16 ViT patch, d = 8 * 8 * 3 = 192). The token of a patch x is argmax_i x^T e_i, computed for a
whole batch as one matmul on the device inside the training step.

Pixels: the tokenizer reads the same ImageNet-normalised images the encoder sees (mean/std per
channel), so patch vectors are roughly zero-centred. That is what makes a symmetric random vocabulary
meaningful (see `random_projection_vocab`) and lets one tensor serve encoder input and targets.

Three vocabularies, all seeded and deterministic:
- random projection (the paper's default): e_i uniform component-wise, then L2-normalised;
- random patches: V patches sampled from the training images, L2-normalised;
- k-means: spherical mini-batch k-means centroids of patches sampled from the training images.

The vocabulary is a buffer (`tokenizer.vocab` in a method's state dict), saved with every checkpoint
so targets stay reproducible after resume and across machines.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .patches import patchify

__all__ = [
    "TOKENIZERS",
    "PatchTokenizer",
    "build_tokenizer",
    "kmeans_vocab",
    "quantisation_error",
    "random_patches_vocab",
    "random_projection_vocab",
    "sample_patches",
]

TOKENIZERS = ("random_projection", "random_patches", "kmeans")


class PatchTokenizer(nn.Module):
    """Maps images to visual words by the highest dot product with a fixed unit-vector vocabulary.

    Args:
        vocab: (V, d) unit vectors, d = patch_size**2 * 3.
        patch_size: tokenizer patch side on the downsampled image (8).
        downsample: image downsampling factor before patching (2); patch_size * downsample must equal
            the ViT patch size so there is one token per ViT patch.
        kind: name of the vocabulary construction (informational).
    """

    def __init__(self, vocab: torch.Tensor, patch_size: int = 8, downsample: int = 2, kind: str = "") -> None:
        super().__init__()
        if vocab.ndim != 2 or vocab.shape[1] != patch_size * patch_size * 3:
            raise ValueError(f"vocab must be (V, {patch_size * patch_size * 3}), got {tuple(vocab.shape)}")
        self.patch_size = patch_size
        self.downsample = downsample
        self.kind = kind
        self.register_buffer("vocab", vocab.float().contiguous())

    @property
    def vocab_size(self) -> int:
        return self.vocab.shape[0]

    @property
    def token_stride(self) -> int:
        """Pixels of the input image per token side (= the ViT patch size it serves)."""
        return self.patch_size * self.downsample

    def patch_vectors(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, n, d) fp32 patch vectors of the 2x-downsampled image."""
        x = images.float()
        if self.downsample > 1:
            x = F.avg_pool2d(x, self.downsample)  # exact area downsampling by an integer factor
        return patchify(x, self.patch_size)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, chunk_rows: int = 65536) -> torch.Tensor:
        """Token ids (B, n) long of (B, 3, H, W) images; n = (H/16) * (W/16) for the defaults."""
        x = self.patch_vectors(images)
        B, n, d = x.shape
        flat = x.reshape(B * n, d)
        # fp32 even under autocast: near-ties among 8192 words would flip in bf16. Chunked so the
        # (rows, V) score matrix stays bounded in memory; this is a loop over chunks, not images.
        with torch.autocast(device_type=images.device.type, enabled=False):
            ids = torch.cat([(rows @ self.vocab.T).argmax(dim=1) for rows in flat.split(chunk_rows)])
        return ids.reshape(B, n)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, vocab_size={self.vocab_size}, patch_size={self.patch_size}, downsample={self.downsample}"


def random_projection_vocab(vocab_size: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(V, d) unit vectors drawn uniform component-wise in [-1, 1), then L2-normalised.

    Why [-1, 1) and not [0, 1): with [0, 1) every word lies in the positive orthant, at cosine
    E[u] / sqrt(E[u^2]) = 0.5 / sqrt(1/3) ~ 0.87 from the all-ones diagonal (for large d), so all 8192
    words point almost the same way and the argmax is decided by small fluctuations, mostly of patch
    brightness. Symmetric components spread the words over every orthant (cosine with any fixed
    direction ~ N(0, 1/d)), so the argmax quantises the *direction* of the zero-centred (normalised)
    patch, i.e. its structure and colour, which is what a visual word should capture.
    """
    g = torch.Generator().manual_seed(seed)
    vocab = torch.rand(vocab_size, dim, generator=g) * 2 - 1
    return F.normalize(vocab, dim=1)


def sample_patches(
    images: Iterable[torch.Tensor],
    num_patches: int,
    patch_size: int = 8,
    downsample: int = 2,
    seed: int = 0,
    min_norm: float = 1e-3,
) -> torch.Tensor:
    """Patch vectors sampled uniformly from a stream of image batches.

    Reads batches (B, 3, H, W) until `num_patches` patches are available (or the stream ends), drops
    near-zero patches (their direction is noise), and returns a uniformly sampled (N, d) subset,
    N <= num_patches. Deterministic for a deterministic stream and seed.
    """
    probe = PatchTokenizer(torch.zeros(1, patch_size * patch_size * 3), patch_size, downsample)
    chunks, total = [], 0
    for batch in images:
        v = probe.patch_vectors(batch).reshape(-1, probe.vocab.shape[1])
        v = v[v.norm(dim=1) > min_norm]
        chunks.append(v.cpu())
        total += v.shape[0]
        if total >= num_patches:
            break
    if not chunks or total == 0:
        raise ValueError("no patches to sample from: the image stream was empty")
    data = torch.cat(chunks)
    g = torch.Generator().manual_seed(seed)
    return data[torch.randperm(data.shape[0], generator=g)[:num_patches]]


def random_patches_vocab(patches: torch.Tensor, vocab_size: int, seed: int = 0) -> torch.Tensor:
    """(V, d): V distinct patches drawn uniformly from `patches` (N, d), L2-normalised."""
    if patches.shape[0] < vocab_size:
        raise ValueError(
            f"random_patches needs at least {vocab_size} sampled patches, got {patches.shape[0]}; "
            "use more images or a smaller tokenizer.vocab_size"
        )
    g = torch.Generator().manual_seed(seed)
    return F.normalize(patches[torch.randperm(patches.shape[0], generator=g)[:vocab_size]].float(), dim=1)


def kmeans_vocab(
    patches: torch.Tensor,
    vocab_size: int,
    iters: int = 200,
    batch_size: int = 16384,
    seed: int = 0,
    reassign_every: int = 20,
) -> torch.Tensor:
    """Spherical mini-batch k-means centroids (V, d) of `patches` (N, d), unit norm.

    Cosine k-means fits the tokenizer's rule (argmax of the dot product with unit words ignores the
    patch's norm). Each iteration assigns a random mini-batch to its nearest centroid and moves every
    hit centroid to the running mean of all points it has received (Sculley's per-centre learning
    rate 1 / count, applied in one batched update), then renormalises. Centroids that have received
    nothing by a reassignment check are re-seeded at random data points. Runs on the patches' device.
    """
    data = F.normalize(patches.float(), dim=1)
    n, d = data.shape
    if n < vocab_size:
        raise ValueError(
            f"k-means needs at least {vocab_size} sampled patches, got {n}; "
            "use more images (tokenizer.num_samples) or a smaller tokenizer.vocab_size"
        )
    g = torch.Generator().manual_seed(seed)
    centers = data[torch.randperm(n, generator=g)[:vocab_size].to(data.device)].clone()
    counts = torch.zeros(vocab_size, device=data.device)
    for it in range(iters):
        x = data[torch.randint(n, (min(batch_size, n),), generator=g).to(data.device)]
        assign = (x @ centers.T).argmax(dim=1)
        sums = torch.zeros_like(centers).index_add_(0, assign, x)
        hits = torch.bincount(assign, minlength=vocab_size).to(counts.dtype)
        new_counts = counts + hits
        running_mean = (centers * counts[:, None] + sums) / new_counts.clamp(min=1)[:, None]
        centers = F.normalize(torch.where((hits > 0)[:, None], running_mean, centers), dim=1)
        counts = new_counts
        if reassign_every and (it + 1) % reassign_every == 0 and it + 1 < iters:
            dead = (counts == 0).nonzero().squeeze(1)
            if dead.numel():
                centers[dead] = data[torch.randint(n, (dead.numel(),), generator=g).to(data.device)]
    return centers


def quantisation_error(vocab: torch.Tensor, patches: torch.Tensor) -> float:
    """Mean over patches of 1 - max_i cos(x, e_i): how well the vocabulary covers the patches' directions."""
    cos = F.normalize(patches.float(), dim=1) @ F.normalize(vocab.float(), dim=1).T
    return float((1 - cos.max(dim=1).values).mean())


def build_tokenizer(
    kind: str = "random_projection",
    vocab_size: int = 8192,
    patch_size: int = 8,
    downsample: int = 2,
    seed: int = 0,
    patches: torch.Tensor | None = None,
    kmeans_iters: int = 200,
    kmeans_batch: int = 16384,
) -> PatchTokenizer:
    """A tokenizer of the given kind; `patches` (N, d) from `sample_patches` are needed for the
    data-dependent kinds (random_patches, kmeans)."""
    dim = patch_size * patch_size * 3
    if kind == "random_projection":
        vocab = random_projection_vocab(vocab_size, dim, seed)
    elif kind in ("random_patches", "kmeans"):
        if patches is None:
            raise ValueError(f"tokenizer {kind!r} needs patches sampled from the training images")
        if kind == "random_patches":
            vocab = random_patches_vocab(patches, vocab_size, seed)
        else:
            vocab = kmeans_vocab(patches, vocab_size, kmeans_iters, kmeans_batch, seed).cpu()
    else:
        raise ValueError(f"unknown tokenizer {kind!r}; choose one of {TOKENIZERS}")
    return PatchTokenizer(vocab, patch_size, downsample, kind)
