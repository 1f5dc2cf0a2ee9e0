"""Frozen-feature probes (k-NN, linear probe), accuracy counting, seeded Mixup / CutMix and the
repeated-augmentation sampler, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from timm.data.distributed_sampler import RepeatAugSampler as TimmRepeatAugSampler

from transfer.classification.augment import RepeatAugSampler, SeededMixup
from transfer.classification.config import AugConfig
from transfer.classification.probes import accuracy_metrics, knn_scores, train_linear_probes


def _clusters(n: int, dim: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block 0: well separated class clusters (linearly separable); block 1: noise."""
    g = torch.Generator().manual_seed(seed)
    means = 6.0 * torch.randn(k, dim, generator=torch.Generator().manual_seed(99))
    y = torch.randint(0, k, (n,), generator=g)
    informative = means[y] + torch.randn(n, dim, generator=g)
    noise = torch.randn(n, dim, generator=g)
    return torch.stack([informative, noise], dim=1), y


@pytest.mark.parametrize("optimizer, base_lr", [("lars", 50.0), ("sgd", 2.0)])
def test_linear_probe_separable_vs_shuffled_labels(optimizer: str, base_lr: float) -> None:
    k = 4
    xt, yt = _clusters(512, 16, k, seed=0)
    xv, yv = _clusters(256, 16, k, seed=1)
    kw = dict(epochs=30, batch_size=128, base_lr=base_lr, warmup_epochs=3, optimizer=optimizer)
    metrics, _ = train_linear_probes(xt, yt, xv, yv, k, **kw)
    assert len(metrics) == 2  # one head per block
    assert metrics[0]["top1"] >= 99.0  # separable block: near-perfect
    assert metrics[1]["top1"] < 40.0  # pure noise: chance (25%)
    shuffled = yt[torch.randperm(len(yt), generator=torch.Generator().manual_seed(5))]
    chance, _ = train_linear_probes(xt, shuffled, xv, yv, k, **kw)
    assert chance[0]["top1"] < 40.0  # labels carry no information: chance


def test_knn_equals_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(60, 8, generator=g), torch.randn(13, 8, generator=g)
    labels = torch.randint(0, 5, (60,), generator=g)
    scores = knn_scores(train, labels, test, num_classes=5, k=7, temperature=0.1, chunk=4)
    expected = np.zeros((13, 5))
    a, b = train.numpy().astype(np.float64), test.numpy().astype(np.float64)
    for i in range(13):
        sims = [float(a[j] @ b[i] / np.linalg.norm(a[j]) / np.linalg.norm(b[i])) for j in range(60)]
        for j in sorted(range(60), key=lambda j: -sims[j])[:7]:
            expected[i, labels[j]] += math.exp(sims[j] / 0.1)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-4)


def test_accuracy_metrics_by_hand() -> None:
    # 4 samples, 6 classes: sample 0 right, 1 wrong but in the top 5, 2 right, 3 outside the top 5.
    scores = torch.tensor([
        [9.0, 1, 0, 0, 0, 0],
        [9.0, 8, 0, 0, 0, 0],
        [0.0, 0, 9, 0, 0, 0],
        [0.0, 1, 2, 3, 4, 5],
    ])
    labels = torch.tensor([0, 1, 2, 0])
    m = accuracy_metrics(scores, labels, 6)
    assert m["top1"] == pytest.approx(50.0) and m["top5"] == pytest.approx(75.0)
    assert m["per_class_acc"] == [50.0, 0.0, 100.0, None, None, None]
    assert m["mean_class_acc"] == pytest.approx(50.0)


@pytest.mark.parametrize("mixup, cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mixup_targets_sum_to_one_and_match_the_images(mixup: float, cutmix: float) -> None:
    k = 10
    aug = AugConfig(mixup=mixup, cutmix=cutmix, label_smoothing=0.0)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8)  # distinct labels: the target's entry of y[i] is lam
    mix = SeededMixup(aug, k, seed=0, rank=0)
    for _ in range(4):
        mixed, target = mix(x.clone(), y)
        assert target.shape == (8, k)
        torch.testing.assert_close(target.sum(1), torch.ones(8))
        lam = float(target[0, 0])
        assert target[0, 7] == pytest.approx(1 - lam, abs=1e-6)  # the partner is the flipped batch
        if cutmix == 0.0:  # mixup: a convex combination with the flipped batch
            torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-5, rtol=0)
        elif mixup == 0.0:  # cutmix: each pixel from one of the two, the pasted share = 1 - lam
            from_partner = (mixed == x.flip(0)).all(1) & (mixed != x).any(1)
            assert from_partner.float().mean().item() == pytest.approx(1 - lam, abs=1e-6)
    smooth = SeededMixup(AugConfig(mixup=mixup, cutmix=cutmix, label_smoothing=0.1), k, seed=0, rank=0)
    torch.testing.assert_close(smooth(x.clone(), y)[1].sum(1), torch.ones(8))


def test_mixup_draws_depend_only_on_seed_rank_and_count() -> None:
    aug = AugConfig()
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    a, b = SeededMixup(aug, 4, seed=1, rank=0), SeededMixup(aug, 4, seed=1, rank=0)
    first = [a(x.clone(), y)[1] for _ in range(3)]
    np.random.seed(123)  # the global numpy stream does not matter and is left as it was
    before = np.random.get_state()[1].copy()
    b.calls = 2  # a resumed run continues from the saved count
    torch.testing.assert_close(b(x.clone(), y)[1], first[2])
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    other_rank = SeededMixup(aug, 4, seed=1, rank=1)
    assert not all(torch.equal(other_rank(x.clone(), y)[1], t) for t in first)


@pytest.mark.parametrize("n, world", [(50, 1), (50, 2), (600, 2)])
def test_repeat_aug_sampler_matches_timm_and_resumes(n: int, world: int) -> None:
    for rank in range(world):
        ours = RepeatAugSampler(n, num_repeats=3, seed=0, rank=rank, world_size=world)
        timm = TimmRepeatAugSampler(list(range(n)), num_replicas=world, rank=rank, num_repeats=3)
        for epoch in (0, 3):
            ours.set_epoch(epoch)
            timm.set_epoch(epoch)  # timm seeds by epoch alone: the same order as seed 0
            got = list(ours)
            assert [i % n for i in got] == list(timm)
            assert len(got) == len(ours) == len(timm)
            # copies of one image are distinct indices (each gets its own augmentation)
            assert len(set(got)) == len(got)
            ours.set_start_batch(2, 4)
            assert list(ours) == got[8:]
            state = ours.state_dict(2, 4)
            again = RepeatAugSampler(n, num_repeats=3, seed=0, rank=rank, world_size=world)
            again.load_state_dict(state)
            assert list(again) == got[8:]
