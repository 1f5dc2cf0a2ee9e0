"""timm's fine-tuning pipeline, made resumable: transforms, seeded Mixup / CutMix, repeated augmentation.

- `train_transform` / `eval_transform`: `timm.data.create_transform` (RandAugment, random resized
  crop, flip, colour jitter; resize + centre crop at the test crop ratio).
- `SeededMixup`: timm's `Mixup` draws from numpy's global legacy RNG; here each call draws from
  that RNG reseeded from (run seed, rank, call counter) and restored afterwards, so the mixing of
  micro-batch c is a pure function of c and a resumed run mixes exactly as the first.
- `RepeatAugSampler`: DeiT's repeated augmentation as an `engine.sampler.ResumableSampler`.
  timm's `RepeatAugSampler` cannot be used with the trainer: it orders by epoch alone (no seed),
  cannot start mid-epoch and has no state to save, while the trainer resumes by
  `set_start_batch` / `state_dict` and passes the sampler's `loader_generator` to the loader.
  The index order is timm's / DeiT's (each image `num_repeats` times in a row, strided over
  ranks, the first ~N / world kept per rank), except that the k-th copy of image i is yielded as
  i + k * N so that each copy gets its own augmentation (`ClsDataset` reads image index % N).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image, ImageOps
from timm.data import Mixup, auto_augment, create_transform

from engine.sampler import ResumableSampler

from .config import AugConfig

__all__ = ["train_transform", "eval_transform", "SeededMixup", "RepeatAugSampler"]


def _posterize(img: Image.Image, bits_to_keep: int, **_) -> Image.Image:
    """timm's posterize for Pillow >= 13, which refuses 0 bits: keeping 0 bits gives a black image
    (what Pillow < 13 returned). RandAugment's increasing posterize reaches 0 bits at level 10,
    which magnitude noise (mstd0.5) draws; without this the sample raises ValueError."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


for _name, _op in list(auto_augment.NAME_TO_OP.items()):
    if _op is auto_augment.posterize:
        auto_augment.NAME_TO_OP[_name] = _posterize


def train_transform(aug: AugConfig, img_size: int):
    """PIL image -> (3, S, S) normalised tensor, timm's training pipeline (no random erasing)."""
    return create_transform(
        img_size, is_training=True, scale=tuple(aug.scale), hflip=aug.hflip, color_jitter=aug.color_jitter,
        auto_augment=aug.rand_augment or None, interpolation=aug.interpolation, re_prob=0.0,
    )  # fmt: skip


def eval_transform(aug: AugConfig, img_size: int):
    """Resize to img_size / test_crop_ratio, centre crop img_size, normalise."""
    return create_transform(img_size, is_training=False, crop_pct=aug.test_crop_ratio, interpolation=aug.interpolation)


@contextlib.contextmanager
def _numpy_seeded(seed_words: list[int]) -> Iterator[None]:
    state = np.random.get_state()
    np.random.set_state(np.random.RandomState(np.random.MT19937(np.random.SeedSequence(seed_words))).get_state())
    try:
        yield
    finally:
        np.random.set_state(state)


class SeededMixup:
    """timm's `Mixup` (batch mode) with its randomness seeded per call (see the module doc).

    Args:
        aug: mixup / cutmix alphas, probabilities and label smoothing.
        num_classes: K of the soft targets.
        seed, rank: the run's seed and this process's rank.
    Attributes:
        calls: micro-batches mixed so far (saved in checkpoints by the task).
    """

    def __init__(self, aug: AugConfig, num_classes: int, seed: int, rank: int) -> None:
        self.mixup = Mixup(
            mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mix_prob, switch_prob=aug.switch_prob,
            mode="batch", label_smoothing=aug.label_smoothing, num_classes=num_classes,
        )  # fmt: skip
        self.seed, self.rank, self.calls = seed, rank, 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) (B even), labels (B,) -> mixed images, soft targets (B, K) summing to 1."""
        if images.shape[0] % 2:
            raise ValueError(f"mixup / cutmix need an even batch, got {images.shape[0]} images per process")
        with _numpy_seeded([self.seed, self.rank, self.calls]):
            out = self.mixup(images, labels)
        self.calls += 1
        return out


class RepeatAugSampler(ResumableSampler):
    """Repeated augmentation (Hoffer et al. 2020; DeiT): `num_repeats` copies of each image per
    epoch, strided over ranks, about N / world samples per rank; resumable (see the module doc).

    Args:
        num_images: N.
        num_repeats: copies per image (3).
        seed: base seed (identical on every rank); rank, world_size: defaults from the process group.
        selected_round: per-rank length is floor(N // round * round / world) when N >= round (DeiT).
    """

    def __init__(self, num_images: int, num_repeats: int = 3, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, selected_round: int = 256) -> None:
        probe = ResumableSampler(num_images, shuffle=True, seed=seed, rank=rank, world_size=world_size)
        world = probe.world_size
        if num_images >= selected_round:
            selected = num_images // selected_round * selected_round // world
        else:
            selected = math.ceil(num_images / world)
        self.num_images, self.num_repeats = int(num_images), int(num_repeats)
        per_rank_pool = math.ceil(num_images * num_repeats / world)
        self.selected = min(selected, per_rank_pool)
        # The parent's "dataset" is the selected epoch: its length fixes the samples per rank.
        super().__init__(self.selected * world, shuffle=True, seed=seed, rank=probe.rank, world_size=world)

    def epoch_indices(self) -> list[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        n, r = self.num_images, self.num_repeats
        images = torch.randperm(n, generator=g).repeat_interleave(r)
        copies = images + n * torch.arange(r).repeat(n)  # copy k of image i -> i + k * N
        total = math.ceil(n * r / self.world_size) * self.world_size
        positions = torch.arange(self.rank, total, self.world_size)[: self.selected] % copies.numel()
        return copies[positions].tolist()
