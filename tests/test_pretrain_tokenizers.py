"""Tokenizers: argmax against a brute-force computation, unit norm, seeding, k-means quality."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pretrain.data import UnlabeledImages, build_transform, collate, list_images, normalize_images
from pretrain.tokenizers import (
    PatchTokenizer,
    build_tokenizer,
    kmeans_vocab,
    quantisation_error,
    random_patches_vocab,
    random_projection_vocab,
    sample_patches,
)


def _brute_force_tokens(images: torch.Tensor, vocab: torch.Tensor) -> torch.Tensor:
    """Loops: 2x2-average each 16 px patch down to 8x8, flatten (row, col, channel), best dot product."""
    B, _, H, W = images.shape
    out = torch.zeros(B, (H // 16) * (W // 16), dtype=torch.long)
    for b in range(B):
        for i in range(H // 16):
            for j in range(W // 16):
                vec = []
                for r in range(8):
                    for c in range(8):
                        for ch in range(3):
                            y, x = 16 * i + 2 * r, 16 * j + 2 * c
                            vec.append(images[b, ch, y : y + 2, x : x + 2].double().mean())
                x_vec = torch.stack(vec)
                scores = [float(x_vec @ vocab[v].double()) for v in range(vocab.shape[0])]
                out[b, i * (W // 16) + j] = max(range(len(scores)), key=scores.__getitem__)
    return out


def test_tokens_equal_brute_force_argmax() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 48, generator=g)
    tok = PatchTokenizer(random_projection_vocab(40, 192, seed=1))
    ids = tok(images)
    assert ids.shape == (2, 6) and ids.dtype == torch.long
    assert torch.equal(ids, _brute_force_tokens(images, tok.vocab))


def test_vocabularies_are_unit_norm_and_seeded() -> None:
    data = torch.randn(500, 192, generator=torch.Generator().manual_seed(0)) * 3
    for make in (
        lambda s: random_projection_vocab(64, 192, seed=s),
        lambda s: random_patches_vocab(data, 64, seed=s),
        lambda s: kmeans_vocab(data, 16, iters=5, batch_size=128, seed=s),
    ):
        v = make(0)
        torch.testing.assert_close(v.norm(dim=1), torch.ones(v.shape[0]))
        assert torch.equal(v, make(0))
        assert not torch.equal(v, make(1))
    rp = random_projection_vocab(256, 192, seed=0)
    # symmetric components: words spread over all orthants, not bunched around the diagonal
    assert rp.min() < 0 < rp.max()
    diag = torch.ones(192) / 192**0.5
    assert (rp @ diag).abs().mean() < 0.2


def test_tokenizer_vocab_is_a_saved_buffer() -> None:
    tok = build_tokenizer("random_projection", vocab_size=32, seed=3)
    sd = tok.state_dict()
    assert list(sd) == ["vocab"] and torch.equal(sd["vocab"], random_projection_vocab(32, 192, seed=3))


def test_kmeans_quantises_demo_patches_better_than_random_patches(demo_coco: Path) -> None:
    files = list_images("coco", demo_coco)
    transform = build_transform("default", 64)

    def stream(seed: int, subset: slice):
        ds = UnlabeledImages(files[subset], transform, seed=seed)
        return (normalize_images(b)["images"] for b in DataLoader(ds, batch_size=16, collate_fn=collate))

    train = sample_patches(stream(0, slice(0, 64)), 1000, seed=0)
    held_out = sample_patches(stream(1, slice(64, 96)), 500, seed=1)
    assert train.shape == (1000, 192)
    rp = random_patches_vocab(train, 32, seed=0)
    km = kmeans_vocab(train, 32, iters=60, batch_size=512, seed=0)
    err_rp, err_km = quantisation_error(rp, held_out), quantisation_error(km, held_out)
    assert err_km < err_rp
    # k-means tokens are used: most words are someone's argmax
    used = PatchTokenizer(km).vocab.matmul(held_out.T).argmax(0).unique().numel()
    assert used > 16
