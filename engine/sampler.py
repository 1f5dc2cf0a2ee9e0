"""A distributed sampler whose order is a pure function of (seed, epoch), resumable mid-epoch, and
the index tagging that lets persistent loader workers follow the epoch."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler

from engine.distributed import get_rank, get_world_size

__all__ = ["EPOCH_STRIDE", "EpochTaggedDataset", "EpochTaggedSampler", "ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Shuffled (or sequential) indices sharded across ranks, with exact mid-epoch resume.

    The global order of epoch ``e`` is ``torch.randperm(dataset_len)`` from a generator seeded with
    ``seed + e`` (nothing else, in particular not the global RNG). It is then made divisible by
    ``world_size`` (``drop_last``: drop the tail; otherwise pad by repeating the head, like
    ``DistributedSampler``) and rank ``r`` takes positions ``r, r + W, r + 2W, ...``.

    Resume: after ``set_epoch(e)``, ``set_start_batch(i, batch_size)`` skips the first
    ``i * batch_size`` indices of this rank, i.e. exactly the batches already consumed (this
    assumes the same world size and per-rank batch size as the interrupted run). ``set_epoch``
    resets the skip, so the following epoch is complete. Equivalently save
    ``state_dict(i, batch_size)`` and call ``load_state_dict`` on resume.

    :attr:`loader_generator` is a generator reseeded from (seed, epoch, rank) by ``set_epoch``;
    pass it as ``DataLoader(generator=...)`` so that creating the loader iterator does not draw
    from the global torch RNG (which would shift dropout etc. after a resume) and worker seeds are
    reproducible per epoch.

    Args:
        dataset_len: number of samples in the dataset.
        shuffle: random order per epoch; False gives ``0, 1, 2, ...``.
        seed: base seed, identical on every rank.
        rank, world_size: defaults from the initialised process group (0 / 1 without one).
        drop_last: drop the tail so every rank gets ``dataset_len // world_size`` samples;
            False pads to ``ceil(dataset_len / world_size)`` by repeating samples.
    """

    def __init__(
        self,
        dataset_len: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = True,
    ) -> None:
        self.dataset_len = int(dataset_len)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.world_size = get_world_size() if world_size is None else int(world_size)
        self.rank = get_rank() if rank is None else int(rank)
        self.drop_last = drop_last
        if self.dataset_len <= 0:
            raise ValueError(f"dataset_len must be positive, got {dataset_len}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside [0, world_size={self.world_size})")
        if drop_last and self.dataset_len < self.world_size:
            raise ValueError(
                f"dataset of {self.dataset_len} samples is smaller than world_size={self.world_size} "
                "with drop_last=True; use drop_last=False or fewer processes"
            )
        if drop_last:
            self.num_samples = self.dataset_len // self.world_size
        else:
            self.num_samples = -(-self.dataset_len // self.world_size)
        self.epoch = 0
        self.start_index = 0
        self.loader_generator = torch.Generator()
        self._reseed_loader_generator()

    def _reseed_loader_generator(self) -> None:
        # A fixed injective-enough mix of (seed, epoch, rank) kept in int64 range.
        mixed = ((self.seed * 1_000_003 + self.epoch) * 10_007 + self.rank) % (2**63 - 1)
        self.loader_generator.manual_seed(mixed)

    def set_epoch(self, epoch: int) -> None:
        """Select the order of ``epoch`` and clear any resume offset."""
        self.epoch = int(epoch)
        self.start_index = 0
        self._reseed_loader_generator()

    def set_start_batch(self, batch_index: int, batch_size: int) -> None:
        """Skip the first ``batch_index`` batches of ``batch_size`` (per rank) of the current epoch."""
        start = int(batch_index) * int(batch_size)
        if not 0 <= start <= self.num_samples:
            raise ValueError(
                f"cannot start at batch {batch_index} x {batch_size}: this rank has only "
                f"{self.num_samples} samples per epoch"
            )
        self.start_index = start

    def epoch_indices(self) -> list[int]:
        """This rank's full index list for the current epoch, ignoring the resume offset."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_len, generator=g)
        else:
            order = torch.arange(self.dataset_len)
        total = self.num_samples * self.world_size
        if total <= self.dataset_len:
            order = order[:total]
        else:
            reps = -(-total // self.dataset_len)
            order = order.repeat(reps)[:total]
        return order[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start_index :])

    def __len__(self) -> int:
        return self.num_samples - self.start_index

    def state_dict(self, batch_index: int, batch_size: int) -> dict:
        """Position after ``batch_index`` batches of ``batch_size`` of the current epoch.

        ``batch_index`` counts from the start of the epoch (include the batches skipped by a
        previous resume). Plain ints, for the checkpoint's ``"sampler"`` entry; the sampler cannot
        count by itself because DataLoader workers prefetch indices ahead of training.
        """
        start = int(batch_index) * int(batch_size)
        if not 0 <= start <= self.num_samples:
            raise ValueError(
                f"batch {batch_index} x {batch_size} is past this rank's {self.num_samples} samples"
            )
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "start_index": start,
            "world_size": self.world_size,
            "dataset_len": self.dataset_len,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore epoch and offset; refuses a different seed, dataset size or world size."""
        for key in ("seed", "dataset_len", "world_size"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(
                    f"sampler state has {key}={state[key]} but this run has {getattr(self, key)}; "
                    "an exact resume needs the same seed, dataset and number of processes"
                )
        self.set_epoch(int(state["epoch"]))
        self.start_index = int(state["start_index"])


# Tagged index = epoch * EPOCH_STRIDE + index: above any index a sampler yields (repeat-factor
# samplers yield i + k * N for copy k), so the tag never mixes with the index.
EPOCH_STRIDE = 2**32


class EpochTaggedSampler(Sampler[int]):
    """``sampler``'s indices plus ``epoch * EPOCH_STRIDE``: the epoch travels inside each index.

    Persistent DataLoader workers hold their own copy of the dataset, made once, so a
    ``dataset.set_epoch`` in the main process never reaches them; an index tagged with its epoch
    does (:class:`EpochTaggedDataset` unpacks it in the worker). Set :attr:`epoch` (and the wrapped
    sampler's) before each new iterator.
    """

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler
        self.epoch = 0

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * EPOCH_STRIDE
        return (offset + int(i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class EpochTaggedDataset(Dataset):
    """Index ``epoch * EPOCH_STRIDE + i`` -> ``dataset[i]`` after ``dataset.set_epoch(epoch)``.

    The worker-side half of :class:`EpochTaggedSampler`: a sample depends on (seed, epoch, i) only
    in every dataset of this project, so a persistent worker gives the same samples as a fresh one.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.epoch: int | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        epoch, i = divmod(int(index), EPOCH_STRIDE)
        if epoch != self.epoch:
            self.dataset.set_epoch(epoch)
            self.epoch = epoch
        return self.dataset[i]
