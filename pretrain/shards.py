"""Sharded tar datasets (the WebDataset layout) as a pretraining source: `--data wds`.

    --data wds --data-root 'shards/{000000..000099}.tar'     # a brace pattern (braceexpand)
    --data wds --data-root shards/                            # every .tar in the folder, sorted
    python -m pretrain.make_shards IMAGE_FOLDER shards/ --per-shard 10000   # write them

A shard is a plain POSIX tar whose members are `<key>.<ext>` files grouped by key (WebDataset's
convention, so `webdataset`, `tar` and other tools read them). A sample is the first image member
(`pretrain.data.IMG_EXTENSIONS`) of each key. At start-up `ShardIndex` reads the tar headers only
(no image bytes) and keeps, per sample, its shard, byte offset and size in numpy arrays (16 bytes a
sample: 300M images fit in about 5 GB); a sample is then read with one positioned read (`os.pread`)
from a file descriptor each loader process opens once per shard.

Being indexed, the source is map-style like the folder sources: the same `ResumableSampler`
splits every epoch's order between the ranks (each rank reads a disjoint 1/world of the samples),
the augmentation of sample i in epoch e depends only on (seed, e, i), and resume is exact at sample
granularity. Broken members (truncated, not an image) go through the same policy as broken files:
replaced, counted in the batch (`"shard.tar:key.jpg (reason)"`) and checked by the skip budget.
Reads are random within and across shards: fine on local disks and SSDs; on an object store, copy
the shards to local disk first.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.config import ConfigError

__all__ = ["ShardIndex", "ShardMember", "expand_shards"]

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # = data.IMG_EXTENSIONS


def expand_shards(spec: str | os.PathLike) -> list[Path]:
    """Shard paths of `spec`: a folder (its `*.tar`, sorted), one .tar, or a brace pattern.

    Raises:
        ConfigError: nothing matches, or a listed shard does not exist (the message names it).
    """
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        shards = sorted(path.glob("*.tar"))
        if not shards:
            raise ConfigError(f"--data wds --data-root {text}: the folder has no .tar shards")
        return shards
    if "{" in text:
        try:
            from braceexpand import braceexpand  # installed with webdataset ([wds] extra)
        except ImportError as e:
            raise ConfigError(
                f"--data-root {text} is a brace pattern, which needs braceexpand: pip install 'target-ssl[wds]' "
                "(or give the folder of the shards)"
            ) from e
        shards = [Path(p).expanduser() for p in braceexpand(text)]
    else:
        shards = [path]
    missing = [p for p in shards if not p.is_file()]
    if missing:
        raise ConfigError(
            f"--data wds --data-root {text}: {len(missing)} of {len(shards)} shards do not exist "
            f"(e.g. {missing[0]}); check the pattern or the folder"
        )
    return shards


def _scan(shard: Path) -> tuple[list[str], list[int], list[int]]:
    """(names, data offsets, sizes) of the first image member of each key, in tar order."""
    names, offsets, sizes, seen = [], [], [], set()
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for m in tar:
                key, dot, ext = m.name.partition(".")
                if m.isfile() and dot and "." + ext.rsplit(".", 1)[-1].lower() in _IMAGE_EXTENSIONS and key not in seen:
                    seen.add(key)
                    names.append(m.name)
                    offsets.append(m.offset_data)
                    sizes.append(m.size)
    except (OSError, tarfile.TarError) as e:
        raise ConfigError(f"cannot read the tar shard {shard} ({e}); re-copy or re-write it") from e
    return names, offsets, sizes


class ShardMember:
    """One image member of a shard: `.open()` -> its bytes as a file object; `str()` names it."""

    __slots__ = ("index", "i")

    def __init__(self, index: ShardIndex, i: int) -> None:
        self.index, self.i = index, i

    def open(self) -> io.BytesIO:
        return io.BytesIO(self.index.read(self.i))

    def __str__(self) -> str:
        return self.index.name(self.i)


class ShardIndex(Sequence):
    """The image members of a list of tar shards, addressable by index (see the module doc).

    Args:
        shards: tar files (`expand_shards`).
    Item i: a `ShardMember`; `index[a:b]` / `index.take(ids)`: a sub-index (max_images, fractions).
    """

    def __init__(self, shards: Sequence[str | os.PathLike]) -> None:
        self.shards = [Path(s) for s in shards]
        shard_ids, offsets, sizes, self._names = [], [], [], []
        for k, shard in enumerate(self.shards):
            names, offs, szs = _scan(shard)
            shard_ids += [k] * len(names)
            offsets += offs
            sizes += szs
            self._names += names
        if not self._names:
            raise ConfigError(f"the {len(self.shards)} shards (e.g. {self.shards[0]}) hold no image members")
        self.shard_ids = np.asarray(shard_ids, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int | slice) -> ShardMember | ShardIndex:
        if isinstance(i, slice):
            return self.take(np.arange(len(self))[i])
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return ShardMember(self, int(i) % len(self))

    def take(self, ids: Sequence[int] | np.ndarray) -> ShardIndex:
        """The samples `ids` (in that order) as a new index over the same shards."""
        ids = np.asarray(ids, dtype=np.int64)
        sub = object.__new__(ShardIndex)
        sub.shards, sub._fds, sub._pid = self.shards, {}, os.getpid()
        sub.shard_ids, sub.offsets, sub.sizes = self.shard_ids[ids], self.offsets[ids], self.sizes[ids]
        sub._names = [self._names[j] for j in ids]
        return sub

    def name(self, i: int) -> str:
        return f"{self.shards[self.shard_ids[i]]}:{self._names[i]}"

    def read(self, i: int) -> bytes:
        """The bytes of sample i (one positioned read; descriptors are per process: fork-safe)."""
        if os.getpid() != self._pid:  # a DataLoader worker: the parent's descriptors are not ours
            self._fds, self._pid = {}, os.getpid()
        k = int(self.shard_ids[i])
        fd = self._fds.get(k)
        if fd is None:
            fd = self._fds[k] = os.open(self.shards[k], os.O_RDONLY)
        return os.pread(fd, int(self.sizes[i]), int(self.offsets[i]))

    def __getstate__(self) -> dict:  # pickled to spawned workers without descriptors
        state = dict(self.__dict__)
        state["_fds"] = {}
        return state
