"""Which patches each pretraining method hides: block-wise (BEiT), SplitMask's split, uniform (MAE).

Per-image masks (block-wise, SplitMask's split, the uniform split of the small-data recipe) are made
in the data-loader workers: each is a callable taking the sample's `numpy.random.Generator` and
returning fixed-size index / boolean tensors, so the collated batch carries (B, K) long tensors the
model gathers with and the training step has no per-image Python work. MAE's uniform masking is a
batched argsort of noise on the device (`random_masking`).

Grid conventions: patches are numbered row-major, index = row * grid_w + col, as patch embedding
flattens them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "MaskBlock",
    "BlockMaskGenerator",
    "BlockMasking",
    "SplitMasking",
    "UniformMasking",
    "complementary_split",
    "random_masking",
    "default_block_bounds",
]


@dataclass(frozen=True)
class MaskBlock:
    """One accepted block of the block-wise generator (for inspection and tests)."""

    target_area: float
    aspect: float
    top: int
    left: int
    h: int
    w: int
    new: int  # patches this block newly masked
    remaining: int  # budget before the block was placed
    cap: int  # most new patches a block may add here: min(remaining, max_block)


def default_block_bounds(num_patches: int) -> tuple[int, int]:
    """(min_block, max_block) scaled from the reference 16 and 75 at 14 x 14 = 196 patches.

    BEiT and SplitMask use min 16 / max 75 patches per block at 224 px; smaller grids (the 128 px demo,
    tiny test images) get proportionally smaller blocks so block masking still places blocks.
    """
    min_block = max(1, num_patches // 12)  # 196 // 12 = 16
    max_block = max(min_block, round(num_patches * 75 / 196))  # 75 at 196
    return min_block, max_block


class BlockMaskGenerator:
    """BEiT's block-wise masking on an h x w grid (DESIGN 4.1).

    Repeats rounds until `num_masked` patches are masked: a round makes up to 10 attempts to place
    one block with target area ~ U(min_block, min(remaining, max_block)) and aspect ratio
    exp(U(log min_aspect, log 1/min_aspect)); block h = round(sqrt(area * ar)), w = round(sqrt(area / ar));
    accepted if h < H, w < W and it newly masks 0 < new <= min(remaining, max_block) patches (BEiT's
    `MaskingGenerator`: the per-block cap bounds what a block adds, not only its sampled area, so an
    overlapping rectangle larger than max_block is still accepted when it adds few enough). Stops
    when a round adds nothing, so the count never exceeds the target but may fall short of it.

    Args:
        grid: (H, W) patches.
        num_masked: target number of masked patches.
        min_block, max_block: block area bounds in patches (max defaults to `num_masked`).
        min_aspect: smallest aspect ratio; the largest is 1 / min_aspect.
    """

    attempts_per_block = 10

    def __init__(
        self,
        grid: tuple[int, int],
        num_masked: int,
        min_block: int = 16,
        max_block: int | None = None,
        min_aspect: float = 0.3,
    ) -> None:
        self.height, self.width = int(grid[0]), int(grid[1])
        if not 0 <= num_masked <= self.height * self.width:
            raise ValueError(f"num_masked={num_masked} outside [0, {self.height * self.width}]")
        self.num_masked = int(num_masked)
        self.min_block = int(min_block)
        self.max_block = int(max_block) if max_block is not None else self.num_masked
        self.log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))

    def _place_block(self, mask: np.ndarray, budget: int, rng: np.random.Generator) -> MaskBlock | None:
        """One round: up to 10 attempts to add a block masking 0 < new <= min(budget, max_block) patches.

        The round's uniforms come in one draw, (attempt, [area, aspect, top, left]): BEiT's per-attempt
        draws at a third of the cost (numpy's scalar calls dominate on a 14 x 14 grid); an attempt
        rejected before placing leaves its top / left unused.
        """
        cap = min(budget, self.max_block)
        # a + (b - a) * U(0, 1): with b < a (budget below min_block) this samples [b, a], as
        # Python's random.uniform does in the reference.
        lo, hi = self.min_block, cap
        log_lo, log_hi = self.log_aspect
        for u_area, u_aspect, u_top, u_left in rng.random((self.attempts_per_block, 4)).tolist():
            area = lo + (hi - lo) * u_area
            aspect = math.exp(log_lo + (log_hi - log_lo) * u_aspect)
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h < self.height and w < self.width:
                top = int(u_top * (self.height - h + 1))  # uniform over 0..H - h
                left = int(u_left * (self.width - w + 1))
                window = mask[top : top + h, left : left + w]
                new = h * w - int(np.count_nonzero(window))
                if 0 < new <= cap:
                    window[...] = True
                    return MaskBlock(area, aspect, top, left, h, w, new, budget, cap)
        return None

    def __call__(self, rng: np.random.Generator, return_blocks: bool = False):
        """A boolean (H, W) mask (True = masked); with `return_blocks` also the list of `MaskBlock`s."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        count, blocks = 0, []
        while count < self.num_masked:
            block = self._place_block(mask, self.num_masked - count, rng)
            if block is None:
                break
            count += block.new
            blocks.append(block)
        return (mask, blocks) if return_blocks else mask


def complementary_split(
    mask: np.ndarray, size_a: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split a grid into A (the mask, topped up or trimmed at random to `size_a`) and B (the rest).

    Args:
        mask: (H, W) or (N,) bool, True = in A.
        size_a: exact size of A.
    Returns:
        ids_a (size_a,), ids_b (N - size_a,): sorted int64 patch indices, disjoint, covering the grid.
    """
    in_a = mask.reshape(-1).copy()
    deficit = size_a - int(in_a.sum())
    if deficit > 0:
        in_a[rng.choice(np.flatnonzero(~in_a), size=deficit, replace=False)] = True
    elif deficit < 0:
        in_a[rng.choice(np.flatnonzero(in_a), size=-deficit, replace=False)] = False
    return np.flatnonzero(in_a), np.flatnonzero(~in_a)


class SplitMasking:
    """SplitMask's subsets for one image: `{"ids_a": (K,), "ids_b": (K,)}` sorted long tensors.

    kind="block" (default): A = block mask at 50% (blocks `min_block..max_block`), topped up / trimmed
    to exactly n/2 patches; B = its complement, so K = n/2 and each branch predicts the other.
    kind="uniform" (small-data recipe, 75% masking): A and B are disjoint uniform random subsets of
    K = int(n * (1 - mask_ratio)) patches each; each branch predicts every patch it does not see.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        kind: str = "block",
        mask_ratio: float = 0.75,
        min_block: int | None = None,
        max_block: int | None = None,
    ) -> None:
        n = grid[0] * grid[1]
        if n % 2:
            raise ValueError(f"SplitMask needs an even number of patches, got a {grid[0]}x{grid[1]} grid")
        self.num_patches = n
        self.kind = kind
        if kind == "block":
            lo, hi = default_block_bounds(n)
            self.generator = BlockMaskGenerator(
                grid,
                n // 2,
                min_block if min_block is not None else lo,
                max_block if max_block is not None else hi,
            )
            self.keep = n // 2
        elif kind == "uniform":
            self.keep = int(n * (1 - mask_ratio))
            if not 0 < self.keep <= n // 2:
                raise ValueError(f"uniform SplitMask needs 0.5 <= mask_ratio < 1, got {mask_ratio}")
        else:
            raise ValueError(f"mask kind must be 'block' or 'uniform', got {kind!r}")

    def __call__(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if self.kind == "block":
            ids_a, ids_b = complementary_split(self.generator(rng), self.keep, rng)
        else:
            perm = rng.permutation(self.num_patches)
            ids_a, ids_b = np.sort(perm[: self.keep]), np.sort(perm[self.keep : 2 * self.keep])
        return {"ids_a": torch.from_numpy(ids_a).long(), "ids_b": torch.from_numpy(ids_b).long()}


class BlockMasking:
    """BEiT's mask for one image: `{"mask": (n,) bool}` (True = replaced by the mask token).

    Default 75 of 196 patches (~38%; scaled as round(n * 75 / 196) for other grids), min block 16.
    """

    def __init__(
        self,
        grid: tuple[int, int],
        num_masked: int | None = None,
        min_block: int | None = None,
        max_block: int | None = None,
    ) -> None:
        n = grid[0] * grid[1]
        num_masked = round(n * 75 / 196) if num_masked is None else num_masked
        lo, _ = default_block_bounds(n)
        self.generator = BlockMaskGenerator(
            grid, num_masked, min_block if min_block is not None else lo, max_block
        )

    def __call__(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        return {"mask": torch.from_numpy(self.generator(rng).reshape(-1))}


class UniformMasking:
    """Uniform random mask for one image: `{"mask": (n,) bool}` with exactly int(n * ratio) True."""

    def __init__(self, grid: tuple[int, int], mask_ratio: float = 0.75) -> None:
        self.num_patches = grid[0] * grid[1]
        self.num_masked = int(self.num_patches * mask_ratio)

    def __call__(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        mask = np.zeros(self.num_patches, dtype=bool)
        mask[rng.choice(self.num_patches, size=self.num_masked, replace=False)] = True
        return {"mask": torch.from_numpy(mask)}


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE's per-sample uniform masking, batched on the device by sorting noise.

    Returns:
        ids_keep (B, K) long with K = int(L * (1 - mask_ratio)) (in shuffled order, as MAE);
        ids_restore (B, L) long: position of each patch in the shuffled order (unshuffles the decoder
        sequence); mask (B, L) float, 1 = masked (removed), 0 = kept, in the original patch order.
    """
    keep = int(num_patches * (1 - mask_ratio))
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_patches, device=device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_shuffle[:, :keep], ids_restore, mask
