"""Masking invariants: BEiT's block generator, SplitMask's complementary split, uniform masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pretrain.masking import (
    BlockMaskGenerator,
    BlockMasking,
    SplitMasking,
    UniformMasking,
    complementary_split,
    default_block_bounds,
    random_masking,
)


@pytest.mark.parametrize("target,min_block,max_block", [(75, 16, None), (98, 16, 75)])
def test_block_generator_blocks_follow_the_recipe(target: int, min_block: int, max_block: int | None) -> None:
    gen = BlockMaskGenerator((14, 14), target, min_block, max_block)
    rng = np.random.default_rng(0)
    hi_cap = max_block if max_block is not None else target
    counts = []
    for _ in range(300):
        mask, blocks = gen(rng, return_blocks=True)
        counts.append(int(mask.sum()))
        rebuilt = np.zeros((14, 14), dtype=bool)
        for b in blocks:
            lo, hi = min_block, min(b.remaining, hi_cap)
            assert min(lo, hi) <= b.target_area <= max(lo, hi)
            assert 0.3 - 1e-9 <= b.aspect <= 1 / 0.3 + 1e-9
            assert abs(b.h - math.sqrt(b.target_area * b.aspect)) <= 0.5
            assert abs(b.w - math.sqrt(b.target_area / b.aspect)) <= 0.5
            assert b.h < 14 and b.w < 14
            assert 0 < b.new <= b.remaining
            # `new` is what the rectangle adds to the blocks placed before it
            assert b.new == b.h * b.w - rebuilt[b.top : b.top + b.h, b.left : b.left + b.w].sum()
            rebuilt[b.top : b.top + b.h, b.left : b.left + b.w] = True
        np.testing.assert_array_equal(rebuilt, mask)
        assert sum(b.new for b in blocks) == mask.sum()
    counts = np.array(counts)
    assert counts.max() <= target  # never above the target
    assert counts.mean() > 0.9 * target  # and close to it on average


def test_default_block_bounds_match_reference_at_224() -> None:
    assert default_block_bounds(196) == (16, 75)
    lo, hi = default_block_bounds(64)
    assert 1 <= lo <= hi < 64


@pytest.mark.parametrize("grid", [(14, 14), (8, 8), (4, 4)])
def test_split_is_complementary_with_exactly_half(grid: tuple[int, int]) -> None:
    n = grid[0] * grid[1]
    split = SplitMasking(grid)
    rng = np.random.default_rng(1)
    for _ in range(50):
        out = split(rng)
        a, b = out["ids_a"], out["ids_b"]
        assert a.dtype == torch.long and a.shape == (n // 2,) and b.shape == (n // 2,)
        assert torch.equal(a, a.sort().values) and torch.equal(b, b.sort().values)
        assert torch.equal(torch.cat([a, b]).sort().values, torch.arange(n))


def test_complementary_split_tops_up_and_trims_keeping_the_block_mask() -> None:
    rng = np.random.default_rng(2)
    small = np.zeros(16, dtype=bool)
    small[[0, 1, 2]] = True
    a, b = complementary_split(small, 8, rng)
    assert len(a) == 8 and {0, 1, 2} <= set(a.tolist())
    big = np.zeros(16, dtype=bool)
    big[:12] = True
    a, b = complementary_split(big, 8, rng)
    assert len(a) == 8 and set(a.tolist()) <= set(range(12))
    assert sorted(a.tolist() + b.tolist()) == list(range(16))


def test_uniform_split_and_uniform_mask_counts() -> None:
    rng = np.random.default_rng(3)
    out = SplitMasking((14, 14), kind="uniform", mask_ratio=0.75)(rng)
    a, b = set(out["ids_a"].tolist()), set(out["ids_b"].tolist())
    assert len(a) == len(b) == int(196 * 0.25) and not a & b
    m = UniformMasking((14, 14), 0.75)(rng)["mask"]
    assert m.dtype == torch.bool and int(m.sum()) == int(196 * 0.75)
    beit = BlockMasking((14, 14))(rng)["mask"]
    assert beit.shape == (196,) and 0 < int(beit.sum()) <= 75


def test_masks_are_a_function_of_the_generator_seed() -> None:
    split = SplitMasking((8, 8))
    a1 = split(np.random.default_rng(5))["ids_a"]
    a2 = split(np.random.default_rng(5))["ids_a"]
    a3 = split(np.random.default_rng(6))["ids_a"]
    assert torch.equal(a1, a2) and not torch.equal(a1, a3)


def test_random_masking_keeps_quarter_and_restores_order() -> None:
    torch.manual_seed(0)
    ids_keep, ids_restore, mask = random_masking(5, 49, 0.75, "cpu")
    keep = int(49 * 0.25)
    assert ids_keep.shape == (5, keep) and ids_restore.shape == (5, 49)
    for i in range(5):
        assert len(set(ids_keep[i].tolist())) == keep
        assert mask[i, ids_keep[i]].sum() == 0 and mask[i].sum() == 49 - keep
    # ids_restore inverts the shuffle whose first K entries are ids_keep, as MAE's decoder uses it
    ids_shuffle = torch.argsort(ids_restore, dim=1)
    assert torch.equal(ids_shuffle[:, :keep], ids_keep)
    tokens = torch.randn(5, 49)
    shuffled = torch.gather(tokens, 1, ids_shuffle)
    assert torch.equal(torch.gather(shuffled, 1, ids_restore), tokens)
