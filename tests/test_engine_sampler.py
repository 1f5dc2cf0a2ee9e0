"""ResumableSampler: determinism from (seed, epoch), rank sharding, exact mid-epoch skipping."""

from __future__ import annotations

import pytest
import torch

from engine.sampler import ResumableSampler


def test_order_depends_only_on_seed_and_epoch() -> None:
    a = ResumableSampler(50, seed=3, rank=0, world_size=1)
    torch.manual_seed(0)
    a.set_epoch(2)
    first = list(a)
    b = ResumableSampler(50, seed=3, rank=0, world_size=1)
    torch.manual_seed(999)  # the global RNG plays no part
    b.set_epoch(2)
    assert list(b) == first
    # the order is the permutation of a generator seeded with seed + epoch
    assert first == torch.randperm(50, generator=torch.Generator().manual_seed(5)).tolist()
    b.set_epoch(3)
    assert list(b) != first and sorted(b) == list(range(50))
    c = ResumableSampler(50, seed=4, rank=0, world_size=1)
    c.set_epoch(2)
    assert list(c) != first


@pytest.mark.parametrize("drop_last", [True, False])
def test_ranks_are_disjoint_and_cover(drop_last: bool) -> None:
    n, world = 23, 4
    shards = []
    for r in range(world):
        s = ResumableSampler(n, seed=1, rank=r, world_size=world, drop_last=drop_last)
        s.set_epoch(7)
        shards.append(list(s))
        assert len(s) == len(shards[-1])
    lengths = {len(x) for x in shards}
    if drop_last:
        assert lengths == {n // world}
        flat = [i for x in shards for i in x]
        assert len(set(flat)) == len(flat) == (n // world) * world  # pairwise disjoint
    else:
        assert lengths == {-(-n // world)}
        flat = [i for x in shards for i in x]
        assert set(flat) == set(range(n))  # every sample seen
        assert len(flat) - len(set(flat)) == world * 6 - n  # only the padding repeats
    # interleaving the shards recovers the global permutation (DistributedSampler's layout)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(1 + 7)).tolist()
    if drop_last:
        interleaved = [shards[k % world][k // world] for k in range(len(flat))]
        assert interleaved == perm[: len(flat)]


def test_set_start_batch_skips_exactly_the_consumed_samples() -> None:
    s = ResumableSampler(40, seed=0, rank=1, world_size=2)
    s.set_epoch(1)
    full = list(s)
    s.set_start_batch(3, batch_size=4)
    assert len(s) == 20 - 12
    assert list(s) == full[12:]
    s.set_epoch(2)  # next epoch is complete again
    assert len(s) == 20
    with pytest.raises(ValueError, match="only 20 samples"):
        s.set_start_batch(6, batch_size=4)


def test_state_dict_roundtrip_and_mismatch() -> None:
    s = ResumableSampler(40, seed=0, rank=0, world_size=2)
    s.set_epoch(4)
    full = list(s)
    state = s.state_dict(batch_index=2, batch_size=5)
    fresh = ResumableSampler(40, seed=0, rank=0, world_size=2)
    fresh.load_state_dict(state)
    assert fresh.epoch == 4 and list(fresh) == full[10:]
    with pytest.raises(ValueError, match="world_size"):
        ResumableSampler(40, seed=0, rank=0, world_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        ResumableSampler(40, seed=1, rank=0, world_size=2).load_state_dict(state)


def test_loader_generator_is_reseeded_per_epoch_and_rank() -> None:
    def draw(rank: int, epoch: int) -> int:
        s = ResumableSampler(10, seed=0, rank=rank, world_size=2)
        s.set_epoch(epoch)
        return int(torch.randint(0, 2**62, (1,), generator=s.loader_generator))

    assert draw(0, 1) == draw(0, 1)
    assert len({draw(0, 1), draw(1, 1), draw(0, 2)}) == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="smaller than world_size"):
        ResumableSampler(3, rank=0, world_size=4, drop_last=True)
    with pytest.raises(ValueError, match="rank"):
        ResumableSampler(10, rank=2, world_size=2)
    unshuffled = ResumableSampler(6, shuffle=False, rank=1, world_size=2)
    assert list(unshuffled) == [1, 3, 5]


def test_epoch_tags_round_trip_through_the_worker_side_dataset() -> None:
    from engine.sampler import EPOCH_STRIDE, EpochTaggedDataset, EpochTaggedSampler

    class Recorder:
        def __init__(self) -> None:
            self.epochs: list[int] = []

        def __len__(self) -> int:
            return 10

        def set_epoch(self, epoch: int) -> None:
            self.epochs.append(epoch)

        def __getitem__(self, i: int) -> tuple[int, int]:
            return self.epochs[-1], i

    base = ResumableSampler(10, shuffle=True, seed=3)
    tagged, data = EpochTaggedSampler(base), EpochTaggedDataset(Recorder())
    for epoch in (0, 1, 5):
        base.set_epoch(epoch)
        tagged.epoch = epoch
        indices = list(tagged)
        assert [k - epoch * EPOCH_STRIDE for k in indices] == list(base) and len(tagged) == len(base)
        assert [data[k] for k in indices] == [(epoch, i) for i in base]
    # Indices past the dataset length (a repeat-factor sampler's copy k of image i is i + k * N)
    # keep their value and their epoch.
    assert data[3 * EPOCH_STRIDE + 27] == (3, 27)
    assert data.dataset.epochs == [0, 1, 5, 3]  # set once per epoch, not once per sample
