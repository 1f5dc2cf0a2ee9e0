"""ImageFolder classification data: layout errors, unreadable images, per-sample augmentation, demo set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from demo_data import DEMO_CLS_CLASSES, ensure_demo_cls
from transfer.classification.augment import eval_transform, train_transform
from transfer.classification.config import AugConfig
from transfer.classification.data import ClsDataset, LayoutError, check_same_classes, collate, list_split


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_cls(tmp_path_factory.mktemp("cls"), train_per_class=4, val_per_class=2, side=40)


def test_demo_layout_and_determinism(small_demo: Path, tmp_path: Path) -> None:
    samples, classes = list_split(small_demo, "train")
    assert classes == sorted(DEMO_CLS_CLASSES) and len(samples) == 24
    assert [label for _, label in samples] == sorted(label for _, label in samples)
    assert len(list_split(small_demo, "val")[0]) == 12
    again = ensure_demo_cls(tmp_path, train_per_class=4, val_per_class=2, side=40)
    a, b = sorted(small_demo.rglob("*.jpg")), sorted(again.rglob("*.jpg"))
    assert [p.relative_to(small_demo) for p in a] == [p.relative_to(again) for p in b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


def test_layout_errors_name_the_folder(small_demo: Path, tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match=f"missing folder {tmp_path / 'train'}"):
        list_split(tmp_path, "train")
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(LayoutError, match="no images"):
        list_split(tmp_path, "train")
    with pytest.raises(LayoutError, match=r"only in train: \['dog'\]"):
        check_same_classes(tmp_path, ["cat", "dog"], ["cat"])


def test_unreadable_images_are_replaced_and_counted(small_demo: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(small_demo, root)
    samples, _ = list_split(root, "train")
    Path(samples[1][0]).write_bytes(b"not a jpeg")
    ds = ClsDataset(samples, train_transform(AugConfig(), 32), train=True, seed=0)
    batch = collate([ds[0], ds[1], ds[2]])
    assert batch["skipped"] == 1 and batch["skipped_files"] == [samples[1][0]]
    assert batch["image"].shape == (3, 3, 32, 32)
    assert batch["label"].tolist() == [samples[0][1], samples[2][1], samples[2][1]]  # 1 -> its successor
    val = ClsDataset(samples, eval_transform(AugConfig(), 32), train=False)
    vb = collate([val[1], val[0]])
    assert vb["label"].tolist() == [-1, samples[0][1]] and vb["skipped"] == 1


def test_augmentation_depends_on_seed_epoch_index_only(small_demo: Path) -> None:
    samples, _ = list_split(small_demo, "train")
    ds = ClsDataset(samples, train_transform(AugConfig(), 32), train=True, seed=3)
    ds.set_epoch(2)
    first = ds[5]["image"]
    torch.manual_seed(0)
    _ = ds[7], torch.rand(3)  # other samples and other draws in between
    rng = torch.get_rng_state()
    assert torch.equal(ds[5]["image"], first)
    assert torch.equal(torch.get_rng_state(), rng)  # the global stream is untouched
    assert not torch.equal(ds[5 + len(samples)]["image"], first)  # a repeated copy: other augmentation
    ds.set_epoch(3)
    assert not torch.equal(ds[5]["image"], first)
