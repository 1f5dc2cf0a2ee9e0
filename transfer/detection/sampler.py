"""LVIS repeat-factor sampling (Gupta et al., LVIS, 2019), distributed and resumable.

Category c appears in a fraction f_c of the training images; it gets the repeat factor
r_c = max(1, sqrt(t / f_c)) and an image the largest factor of its categories,
r_i = max_{c in i} r_c (1 for images without annotations). Every epoch image i is taken
floor(r_i) times plus once more with probability frac(r_i) (stochastic rounding), the multiset is
shuffled, and the result is sharded across ranks like `engine.sampler.ResumableSampler` (whose
resume logic this reuses).

The number of samples per epoch is fixed to floor(sum_i r_i) (the expected size), cutting or
cycling the rounded multiset, so the number of iterations (and with it the lr schedule, the ETA
and the resume position) does not change from epoch to epoch. The order depends only on
(seed, epoch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from engine.sampler import ResumableSampler

__all__ = ["repeat_factors", "RepeatFactorSampler"]


def repeat_factors(categories_per_image: Sequence[Sequence[int]], threshold: float = 0.001) -> torch.Tensor:
    """Per-image repeat factors.

    Args:
        categories_per_image: the categories present in each training image.
        threshold: t; categories in fewer than a fraction t of the images are over-sampled.
    Returns:
        (num_images,) float64 tensor, every entry >= 1.
    """
    num_images = len(categories_per_image)
    if num_images == 0:
        raise ValueError("repeat_factors needs at least one image")
    image_count: dict[int, int] = {}
    for cats in categories_per_image:
        for c in set(cats):
            image_count[c] = image_count.get(c, 0) + 1
    cat_factor = {c: max(1.0, math.sqrt(threshold / (n / num_images))) for c, n in image_count.items()}
    return torch.tensor(
        [max((cat_factor[c] for c in cats), default=1.0) for cats in categories_per_image], dtype=torch.float64
    )


class RepeatFactorSampler(ResumableSampler):
    """Indices drawn with per-image repeat factors, `floor(sum(r))` per epoch, sharded over ranks.

    The k-th copy of image i within an epoch is yielded as `i + k * N` (N images), so that
    `CocoInstances` gives each copy its own augmentation (it reads image `index % N`).

    Args:
        factors: (N,) repeat factors from :func:`repeat_factors`.
        seed: base seed (identical on every rank).
        rank, world_size: defaults from the process group.
    """

    def __init__(
        self,
        factors: torch.Tensor,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        factors = torch.as_tensor(factors, dtype=torch.float64)
        if factors.ndim != 1 or factors.numel() == 0 or bool((factors < 1).any()):
            raise ValueError("factors must be a non-empty 1-D tensor of values >= 1")
        self.factors = factors
        self.num_images = factors.numel()
        # The parent's "dataset" is the resampled epoch: its length fixes samples per rank.
        super().__init__(
            int(factors.sum().floor().item()), shuffle=True, seed=seed, rank=rank, world_size=world_size
        )

    def epoch_indices(self) -> list[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        whole = self.factors.floor()
        reps = (whole + (torch.rand(self.num_images, generator=g, dtype=torch.float64) < self.factors - whole)).long()
        images = torch.repeat_interleave(torch.arange(self.num_images), reps)
        first = torch.repeat_interleave(torch.cumsum(reps, 0) - reps, reps)  # where each image's run starts
        pool = images + self.num_images * (torch.arange(images.numel()) - first)  # i + k * N for copy k
        pool = pool[torch.randperm(pool.numel(), generator=g)]
        total = self.num_samples * self.world_size
        if pool.numel() < total:  # pad (rare: sum of the drawn repeats below the mean); later copies, later k
            rounds = -(-total // pool.numel())
            offsets = torch.arange(rounds).repeat_interleave(pool.numel()) * reps.max() * self.num_images
            pool = pool.repeat(rounds) + offsets
        return pool[:total][self.rank :: self.world_size].tolist()
