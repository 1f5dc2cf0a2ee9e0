"""Sharded tar sources (--data wds): folder -> shards -> the same images; broken members; resume."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import ConfigError
from engine.sampler import ResumableSampler
from pretrain.data import UnlabeledImages, build_transform, collate, list_images, select_subset

wds = pytest.importorskip("webdataset")
from pretrain.make_shards import main as make_shards_main  # noqa: E402
from pretrain.shards import ShardIndex, expand_shards  # noqa: E402


def _folder(root: Path, n: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24 + i, 32, 3), dtype=np.uint8)).save(sub / f"{i:02d}.jpg", quality=95)
    return root


def test_folder_to_shards_round_trip_gives_the_same_images(tmp_path: Path) -> None:
    src = _folder(tmp_path / "imgs")
    make_shards_main(["--data", "folder", "--data-root", str(src), "--out", str(tmp_path / "sh"), "--per-shard", "4"])
    shards = expand_shards(tmp_path / "sh")
    assert [p.name for p in shards] == ["000000.tar", "000001.tar", "000002.tar"]  # 4 + 4 + 2
    assert expand_shards(str(tmp_path / "sh" / "{000000..000002}.tar")) == shards
    index = list_images("wds", str(tmp_path / "sh"))
    files = list_images("folder", src)
    assert isinstance(index, ShardIndex) and len(index) == len(files) == 10
    for member, f in zip(index, files):  # the same bytes, in the folder's sorted order
        assert member.open().read() == f.read_bytes()
    # the stored relative path, read back with webdataset itself (the shards are standard)
    names = [s["path.txt"].decode() for s in wds.WebDataset([str(p) for p in shards], shardshuffle=False)]
    assert names == [str(f.relative_to(src)) for f in files]
    # the training samples are identical too (same seed, epoch, index -> same crop and masks)
    a = UnlabeledImages(files, build_transform("default", 16), seed=5)
    b = UnlabeledImages(index, build_transform("default", 16), seed=5)
    for i in range(len(files)):
        assert torch.equal(a[i]["images"], b[i]["images"])
    assert len(select_subset(index, tmp_path, fraction=0.5, seed=1)) == 5 and len(index[:3]) == 3


def test_a_corrupted_member_is_skipped_and_counted(tmp_path: Path) -> None:
    src = _folder(tmp_path / "imgs", 4)
    good = sorted(src.rglob("*.jpg"))
    shard = tmp_path / "s" / "000000.tar"
    shard.parent.mkdir()
    with tarfile.open(shard, "w") as tar:
        for i, f in enumerate(good):
            data = f.read_bytes()
            if i == 1:
                data = data[: len(data) // 2]  # truncated JPEG
            info = tarfile.TarInfo(f"k{i}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = UnlabeledImages(list_images("wds", str(shard)), build_transform("default", 16), seed=0)
    batch = collate([ds[i] for i in range(4)])
    assert batch["skipped"] == 1 and batch["images"].shape == (4, 3, 16, 16)
    assert batch["skipped_files"][0].startswith(f"{shard}:k1.jpg (")


def test_resume_mid_epoch_continues_with_the_right_samples(tmp_path: Path) -> None:
    src = _folder(tmp_path / "imgs", 12)
    make_shards_main(["--data-root", str(src), "--out", str(tmp_path / "sh"), "--per-shard", "5"])
    ds = UnlabeledImages(list_images("wds", str(tmp_path / "sh")), build_transform("default", 16), seed=0)

    def batches(start_batch: int) -> list[torch.Tensor]:
        sampler = ResumableSampler(len(ds), shuffle=True, seed=3)
        sampler.set_epoch(1)
        sampler.set_start_batch(start_batch, 4)
        ds.set_epoch(1)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate,
                                             generator=sampler.loader_generator)  # fmt: skip
        return [b["images"] for b in loader]

    full, resumed = batches(0), batches(1)
    assert len(full) == 3 and len(resumed) == 2
    assert all(torch.equal(x, y) for x, y in zip(full[1:], resumed))


def test_bad_shard_specs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="do not exist"):
        expand_shards(str(tmp_path / "{000000..000001}.tar"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no .tar shards"):
        expand_shards(tmp_path / "empty")
    (tmp_path / "bad.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(ConfigError, match="cannot read the tar shard"):
        ShardIndex([tmp_path / "bad.tar"])
