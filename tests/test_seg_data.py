"""ADE20k-layout datasets: label convention, class lists, layout errors, unreadable files, and
augmentation that depends only on (seed, epoch, index)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from transfer.segmentation.data import (
    AnnotationError,
    SegDataset,
    collate_train,
    list_pairs,
    load_label,
    read_class_names,
)
from transfer.segmentation.transforms import EvalTransform, TrainTransform

TRAIN_TF = TrainTransform(crop_size=(32, 32), scale=(128, 32))


def make_dataset(root: Path, n_train: int = 4, n_val: int = 2, num_classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("training", n_train), ("validation", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            h, w = 32 + 4 * i, 40
            cv2.imwrite(str(root / "images" / split / f"img_{i}.jpg"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            label = rng.integers(0, num_classes + 1, (h, w), dtype=np.uint8)  # 0 = other, 1..K
            Image.fromarray(label).save(root / "annotations" / split / f"img_{i}.png")
    (root / "classes.txt").write_text("".join(f"c{k}\n" for k in range(num_classes)))
    return root


def test_demo_layout_and_zero_label_reduction(demo_ade: Path) -> None:
    names = read_class_names(demo_ade)
    assert names == ["sky", "building", "tree", "grass", "road", "water", "ball", "box"]
    ds = SegDataset(demo_ade, "val", len(names), EvalTransform(scale=(512, 128)))
    img_path, ann_path = ds.pairs[0]
    raw = np.asarray(Image.open(ann_path))
    _, label = ds.read(0)
    np.testing.assert_array_equal(label, np.where(raw == 0, 255, raw.astype(np.int64) - 1))  # 0 -> 255, x -> x-1
    sample = ds[0]
    assert sample["label"].shape == raw.shape and sample["skipped"] == 0
    assert min(sample["image"].shape[1:]) == 128


def test_class_names_from_object_info(tmp_path: Path) -> None:
    (tmp_path / "objectInfo150.txt").write_text(
        "Idx\tRatio\tTrain\tVal\tName\n1\t0.1576\t11664\t1172\twall\n2\t0.1072\t6046\t612\tbuilding;edifice\n"
    )
    assert read_class_names(tmp_path) == ["wall", "building"]
    assert read_class_names(tmp_path, ["a", "b", "c"]) == ["a", "b", "c"]


def test_missing_root_and_files_show_the_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"does not exist[\s\S]*images/training/\*\.jpg"):
        list_pairs(tmp_path / "nope", "train")
    root = make_dataset(tmp_path / "ds")
    (root / "annotations" / "training" / "img_1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 4 images .* have no annotation, e\.g\. .*img_1\.png"):
        list_pairs(root, "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_class_names(tmp_path / "nope")
    (root / "classes.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no class names"):
        read_class_names(root)
    assert read_class_names(root, num_classes=3) == ["class_0", "class_1", "class_2"]


def test_label_outside_the_classes_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    Image.fromarray(np.full((4, 4), 9, np.uint8)).save(path)
    with pytest.raises(AnnotationError, match=r"bad\.png has class id 9"):
        load_label(path, num_classes=3)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(AnnotationError, match="single-channel"):
        load_label(tmp_path / "rgb.png", num_classes=3)


def test_unreadable_images_are_skipped_and_counted(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    (root / "images" / "training" / "img_1.jpg").write_bytes(b"not a jpeg")
    (root / "images" / "validation" / "img_0.jpg").write_bytes(b"")
    train = SegDataset(root, "train", 3, TRAIN_TF)
    s = train[1]  # substitutes the next readable pair and reports one skip
    assert s["skipped"] == 1 and s["image"].shape == (3, 32, 32)
    batch = collate_train([train[0], train[1], train[2]])
    assert batch["skipped"] == 1 and batch["image"].shape == (3, 3, 32, 32)
    val = SegDataset(root, "val", 3, EvalTransform(scale=(128, 32)))
    assert val[0]["skipped"] == 1 and "img_0.jpg" in val[0]["error"]
    assert val[1]["skipped"] == 0


def test_augmentation_depends_on_seed_epoch_index_only(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    a = SegDataset(root, "train", 3, TRAIN_TF, seed=5)
    b = SegDataset(root, "train", 3, TRAIN_TF, seed=5)
    torch.manual_seed(0)
    np.random.seed(0)
    first = a[2]
    torch.manual_seed(123)  # global RNGs (worker seeds) must not matter
    np.random.seed(123)
    again = b[2]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    b.set_epoch(1)
    assert not torch.equal(b[2]["image"], first["image"])
