"""SplitMask / BEiT / MAE: what each branch sees, the losses against independent computations, and
that each loss falls on demo images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pretrain.config import MaskConfig, ModelConfig
from pretrain.data import UnlabeledImages, build_transform, collate, list_images, normalize_images
from pretrain.masking import BlockMasking, SplitMasking
from pretrain.methods import build_encoder, build_masking, build_method, symmetric_info_nce
from pretrain.methods.mae import masked_mse, normalized_pixel_target
from pretrain.tokenizers import build_tokenizer

TINY = dict(
    arch="vit_tiny",
    embed_dim=64,
    depth=2,
    num_heads=2,
    mae_decoder_dim=32,
    mae_decoder_depth=1,
    mae_decoder_heads=2,
)


def _model(method: str, img_size: int = 64, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(method=method, **{**TINY, **kw})
    tok = build_tokenizer("random_projection", vocab_size=128, seed=0) if method != "mae" else None
    return build_method(cfg, build_encoder(cfg, img_size), tok)


def _patch_pixels_mask(ids: torch.Tensor, grid: int, patch: int = 16) -> torch.Tensor:
    """(B, K) patch ids -> (B, 1, H, W) bool, True on those patches' pixels."""
    m = torch.zeros(ids.shape[0], grid * grid, dtype=torch.bool).scatter_(1, ids, True)
    return m.reshape(-1, 1, grid, grid).repeat_interleave(patch, 2).repeat_interleave(patch, 3)


def _split_batch(B: int, grid: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    split, rng = SplitMasking((grid, grid)), np.random.default_rng(seed)
    outs = [split(rng) for _ in range(B)]
    return torch.stack([o["ids_a"] for o in outs]), torch.stack([o["ids_b"] for o in outs])


def test_splitmask_subset_a_never_sees_subset_b() -> None:
    model = _model("splitmask").eval()
    B, grid = 3, 4
    images = torch.randn(B, 3, 64, 64)
    ids_a, ids_b = _split_batch(B, grid)
    changed = torch.where(_patch_pixels_mask(ids_b, grid), torch.randn_like(images) * 5, images)
    with torch.no_grad():
        enc1, _ = model.encode_subsets(images, ids_a, ids_b)
        enc2, _ = model.encode_subsets(changed, ids_a, ids_b)
    torch.testing.assert_close(enc1[:B], enc2[:B], rtol=0, atol=1e-6)  # subset A: unchanged
    assert (enc1[B:] - enc2[B:]).abs().max() > 1e-2  # subset B did see its new pixels


def test_symmetric_info_nce_matches_explicit_formula() -> None:
    g = torch.Generator().manual_seed(0)
    a, b, tau = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), 0.2
    loss, acc = symmetric_info_nce(a, b, tau)

    def unit(v: torch.Tensor) -> list[float]:
        n = math.sqrt(sum(float(x) ** 2 for x in v))
        return [float(x) / n for x in v]

    A, Bv = [unit(r) for r in a], [unit(r) for r in b]
    dot = lambda u, v: sum(x * y for x, y in zip(u, v))  # noqa: E731
    terms = []
    for i in range(4):
        for q, keys in ((A[i], Bv), (Bv[i], A)):
            pos = math.exp(dot(q, keys[i]) / tau)
            terms.append(-math.log(pos / sum(math.exp(dot(q, k) / tau) for k in keys)))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert 0.0 <= acc.item() <= 1.0


def test_splitmask_losses_equal_independent_computation() -> None:
    model = _model("splitmask").eval()
    B, grid = 3, 4
    images = torch.randn(B, 3, 64, 64)
    ids_a, ids_b = _split_batch(B, grid, seed=1)
    out = model({"images": images, "ids_a": ids_a, "ids_b": ids_b})
    with torch.no_grad():
        enc, hw = model.encode_subsets(images, ids_a, ids_b)
        dec = model.decode(enc, torch.cat([ids_a, ids_b]), hw)
        words = model.tokenizer(images)
        # A predicts the words at B's positions, B at A's: per-image loops, no shared trick
        ce = []
        for i in range(B):
            for branch, target_ids in ((i, ids_b[i]), (B + i, ids_a[i])):
                logits = model.head(dec[branch, target_ids])
                ce.append(F.cross_entropy(logits, words[i, target_ids], reduction="sum"))
        mim = torch.stack(ce).sum() / (2 * B * ids_a.shape[1])
        con, _ = symmetric_info_nce(dec[:B].mean(1), dec[B:].mean(1), 0.2)
    torch.testing.assert_close(out["mim_loss"], mim)
    torch.testing.assert_close(out["contrastive_loss"], con)
    torch.testing.assert_close(out["loss"], mim + con)


@pytest.mark.parametrize("use_mim,use_contrastive", [(True, False), (False, True)])
def test_splitmask_ablations_drop_a_term(use_mim: bool, use_contrastive: bool) -> None:
    model = _model("splitmask", use_mim=use_mim, use_contrastive=use_contrastive)
    ids_a, ids_b = _split_batch(2, 4)
    out = model({"images": torch.randn(2, 3, 64, 64), "ids_a": ids_a, "ids_b": ids_b})
    assert ("mim_loss" in out) == use_mim and ("contrastive_loss" in out) == use_contrastive
    out["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # DDP: nothing unused


def test_beit_masked_patches_are_replaced_before_the_encoder() -> None:
    model = _model("beit").eval()
    assert model.encoder.blocks[0].ls1.gamma.detach().eq(0.1).all()  # layer scale 0.1
    rng = np.random.default_rng(0)
    gen = BlockMasking((4, 4), num_masked=6, min_block=2)
    mask = torch.stack([gen(rng)["mask"] for _ in range(2)])
    images = torch.randn(2, 3, 64, 64)
    ids = torch.stack([m.nonzero()[0] for m in mask])  # one masked patch per image, (2, 1)
    changed = torch.where(_patch_pixels_mask(ids, 4), images + 3.0, images)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_masked(images, mask), model.encode_masked(changed, mask))
        out = model({"images": images, "mask": mask})
        logits = model.head(model.encode_masked(images, mask))
        words = model.tokenizer(images)
        ref = torch.stack(
            [F.cross_entropy(logits[i, j][None], words[i, j][None]) for i, j in mask.nonzero()]
        ).mean()
    torch.testing.assert_close(out["loss"], ref)


def test_mae_normalised_pixel_loss_equals_explicit_loops() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 8, 8, generator=g)  # patch 4 -> 2x2 grid of 48-value patches
    pred = torch.randn(2, 4, 48, generator=g)
    mask = torch.tensor([[1.0, 0, 1, 1], [0, 1, 0, 0]])
    target = normalized_pixel_target(images, 4)
    total, count = 0.0, 0
    for b in range(2):
        for gi in range(2):
            for gj in range(2):
                t = [
                    float(images[b, c, 4 * gi + p, 4 * gj + q])
                    for p in range(4)
                    for q in range(4)
                    for c in range(3)
                ]
                mean = sum(t) / 48
                var = sum((x - mean) ** 2 for x in t) / 47
                norm = [(x - mean) / math.sqrt(var + 1e-6) for x in t]
                k = 2 * gi + gj
                assert target[b, k].tolist() == pytest.approx(norm, rel=1e-4, abs=1e-5)
                if mask[b, k]:
                    total += sum((float(pred[b, k, i]) - norm[i]) ** 2 for i in range(48)) / 48
                    count += 1
    assert masked_mse(pred, target, mask).item() == pytest.approx(total / count, rel=1e-5)


def test_mae_encoder_sees_a_quarter_of_the_patches() -> None:
    model = _model("mae")
    seen = []
    orig = model.encoder.forward_tokens
    model.encoder.forward_tokens = lambda t: (seen.append(t.shape[1]), orig(t))[1]
    out = model({"images": torch.randn(2, 3, 64, 64)})
    assert seen == [int(16 * 0.25)] and torch.isfinite(out["loss"])


@pytest.mark.parametrize("method", ["splitmask", "beit", "mae"])
def test_loss_falls_on_demo_images(method: str, demo_coco: Path) -> None:
    files = list_images("coco", demo_coco)[:8]
    masking = build_masking(method, MaskConfig(), (4, 4))
    ds = UnlabeledImages(files, build_transform("default", 64), masking, seed=0)
    model = _model(method, drop_path=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    losses = []
    for step in range(12):
        ds.set_epoch(step)  # fresh crops and masks every step
        batch = normalize_images(collate([ds[i] for i in range(8)]))
        loss = model(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.9 * first, losses


def test_target_word_stats_equal_hand_values() -> None:
    from pretrain.methods.common import target_word_stats

    # words 3 x3, 1 x2, 0 x1 of 6: the commonest covers half; entropy by hand
    stats = target_word_stats(torch.tensor([[3, 3, 1], [3, 0, 1]]))
    assert stats["mim_unigram_acc"].item() == pytest.approx(0.5)
    hand = -(1 / 6 * math.log(1 / 6) + 2 / 6 * math.log(2 / 6) + 3 / 6 * math.log(3 / 6))
    assert stats["mim_target_entropy"].item() == pytest.approx(hand, rel=1e-6)
    one_word = target_word_stats(torch.full((5,), 7))
    assert one_word["mim_unigram_acc"].item() == 1.0 and one_word["mim_target_entropy"].item() == 0.0


def _loss_and_grads(model: torch.nn.Module, batch: dict) -> tuple[dict, list[torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(5)  # same drop-path draws in both passes
    out = model(batch)
    out["loss"].backward()
    return out, [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("method", ["splitmask", "beit"])
def test_diagnostics_leave_loss_and_gradients_bit_identical(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import pretrain.methods.beit as beit_mod
    import pretrain.methods.splitmask as splitmask_mod

    model, B, grid = _model(method), 4, 4
    images = torch.randn(B, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    if method == "splitmask":
        ids_a, ids_b = _split_batch(B, grid, seed=2)
        batch = {"images": images, "ids_a": ids_a, "ids_b": ids_b}
    else:
        masking, rng = BlockMasking((grid, grid)), np.random.default_rng(2)
        batch = {"images": images, "mask": torch.stack([masking(rng)["mask"] for _ in range(B)])}
    out, grads = _loss_and_grads(model, batch)
    # The forward pass as it was before the diagnostics: no word statistics computed at all.
    for mod in (splitmask_mod, beit_mod):
        monkeypatch.setattr(mod, "target_word_stats", lambda targets: {})
    before, grads_before = _loss_and_grads(model, batch)
    assert torch.equal(out["loss"], before["loss"])
    assert len(grads) == len(grads_before) and all(torch.equal(g, h) for g, h in zip(grads, grads_before))
    assert 0 < out["mim_unigram_acc"].item() <= 1 and out["mim_target_entropy"].item() >= 0
    assert "mim_unigram_acc" not in before
    if method == "splitmask":
        assert out["contrastive_chance"].item() == pytest.approx(1 / B)
        # the unigram accuracy is that of the targets the head is scored on (A's words + B's words)
        words = model.tokenizer(images)
        all_targets = torch.cat([torch.gather(words, 1, ids_b), torch.gather(words, 1, ids_a)])
        freq = torch.bincount(all_targets.flatten()).max().item() / all_targets.numel()
        assert out["mim_unigram_acc"].item() == pytest.approx(freq)
