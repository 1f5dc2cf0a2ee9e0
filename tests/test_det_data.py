"""COCO-format data: masks / boxes / labels from the json, crowds, empty images, layouts, bad input,
and LVIS repeat-factor sampling."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transfer.detection.config import DataConfig
from transfer.detection.datasets import (
    AnnotationFormatError,
    CocoInstances,
    DatasetLayoutError,
    collate,
    load_coco_json,
    resolve_split,
)
from transfer.detection.sampler import RepeatFactorSampler, repeat_factors
from transfer.detection.transforms import build_train_transforms


def test_targets_match_the_annotations(demo_coco: Path) -> None:
    files = resolve_split(DataConfig(root=str(demo_coco)), "val")
    ds = CocoInstances(files, train=True, transforms=None, filter_empty=False)
    data = json.loads(files.ann_file.read_text())
    # Non-contiguous category ids (1, 3, 7) -> labels 1..3 in id order, and back.
    cat_ids = sorted(c["id"] for c in data["categories"])
    assert ds.cat_id_to_label == {c: i + 1 for i, c in enumerate(cat_ids)}
    assert all(ds.label_to_cat_id[ds.cat_id_to_label[c]] == c for c in cat_ids)
    assert len(ds) == len(data["images"])  # filter_empty=False keeps the empty image
    seen_crowd = seen_rle = False
    for idx, img_id in enumerate(ds.ids):
        image, target = ds[idx]
        anns = [a for a in data["annotations"] if a["image_id"] == img_id]
        kept = [a for a in anns if not a["iscrowd"]]
        seen_crowd |= len(kept) < len(anns)
        seen_rle |= any(isinstance(a["segmentation"], dict) for a in kept)
        info = ds.coco.imgs[img_id]
        assert image.shape == (3, info["height"], info["width"]) and image.dtype == torch.uint8
        assert target["image_id"] == img_id and target["skipped"] == 0
        assert target["labels"].tolist() == [ds.cat_id_to_label[a["category_id"]] for a in kept]
        for a, box, mask in zip(kept, target["boxes"], target["masks"]):
            x, y, w, h = a["bbox"]
            assert box.tolist() == pytest.approx([x, y, x + w, y + h])
            # Independent decoding with pycocotools' own annToMask; `area` is the mask's pixel count.
            np.testing.assert_array_equal(mask.numpy(), ds.coco.annToMask(a))
            assert int(mask.sum()) == a["area"]
    assert seen_crowd and seen_rle  # the demo split exercises crowds and RLE segmentations


def _augmented_set(demo_coco: Path, seed: int = 5) -> CocoInstances:
    cfg = DataConfig(kind="coco", root=str(demo_coco), train_sizes=(96, 128, 160), max_size=256,
                     crop_pre_sizes=(96, 128), crop_size=(64, 96))
    return CocoInstances(resolve_split(cfg, "train"), train=True, transforms=build_train_transforms(cfg), seed=seed)


def _same(a: tuple, b: tuple) -> bool:
    (img_a, t_a), (img_b, t_b) = a, b
    return img_a.shape == img_b.shape and torch.equal(img_a, img_b) and torch.equal(t_a["boxes"], t_b["boxes"])


def test_augmentation_depends_only_on_seed_epoch_and_index(demo_coco: Path) -> None:
    ds = _augmented_set(demo_coco)
    ds.set_epoch(2)
    first = [ds[i] for i in range(6)]
    torch.manual_seed(123)
    torch.rand(17)  # whatever the global stream did before...
    assert all(_same(a, ds[i]) for i, a in enumerate(first))  # ...the samples are the same
    # ...and sampling leaves the global stream where it was.
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    ds[0]
    assert torch.equal(torch.rand(3), expected)
    # Another epoch, another seed, or another copy (index + N) draws other augmentations.
    others = []
    for epoch, seed in ((3, 5), (2, 6)):
        alt = _augmented_set(demo_coco, seed)
        alt.set_epoch(epoch)
        others.append([alt[i] for i in range(6)])
    others.append([ds[i + len(ds)] for i in range(6)])
    for batch in others:
        assert not all(_same(a, b) for a, b in zip(first, batch))
    assert all(ds[i + len(ds)][1]["image_id"] == first[i][1]["image_id"] for i in range(6))


def test_loader_workers_do_not_change_the_samples(demo_coco: Path) -> None:
    ds = _augmented_set(demo_coco)
    ds.set_epoch(1)
    batches = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=3, sampler=list(range(9)), num_workers=workers,
                                             collate_fn=collate)
        batches.append([(b["images"], b["targets"]) for b in loader])
    for (imgs_a, tgts_a), (imgs_b, tgts_b) in zip(*batches):
        for a, b, ta, tb in zip(imgs_a, imgs_b, tgts_a, tgts_b):
            assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["masks"], tb["masks"])


def test_filter_empty_and_collate(demo_coco: Path) -> None:
    files = resolve_split(DataConfig(root=str(demo_coco)), "val")
    data = json.loads(files.ann_file.read_text())
    usable = {a["image_id"] for a in data["annotations"] if not a["iscrowd"]}
    ds = CocoInstances(files, train=True, filter_empty=True)
    assert set(ds.ids) == usable
    batch = collate([ds[0], ds[1]])
    images, targets, skipped = batch["images"], batch["targets"], batch["skipped"]
    assert skipped == 0 and len(images) == len(targets) == 2
    assert type(images[0]) is torch.Tensor and type(targets[0]["boxes"]) is torch.Tensor
    assert "skipped" not in targets[0]


def test_missing_layout_shows_expected_tree(tmp_path: Path) -> None:
    with pytest.raises(DatasetLayoutError, match="instances_train2017.json") as e:
        resolve_split(DataConfig(root=str(tmp_path / "nowhere")), "train")
    assert "--data-root" in str(e.value)
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="lvis_v1_val.json"):
        resolve_split(DataConfig(kind="lvis", root=str(tmp_path / "coco")), "val")
    with pytest.raises(DatasetLayoutError, match="data.train_json"):
        resolve_split(DataConfig(kind="custom", root=str(tmp_path)), "train")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"images": [', "not valid JSON"),
        ('{"images": [], "annotations": []}', "missing top-level key 'categories'"),
        ('{"images": [{"id": 1, "height": 4, "width": 4, "file_name": "a.jpg"}], "categories": [{"id": 1}], '
         '"annotations": [{"image_id": 1, "category_id": 8, "bbox": [0, 0, 1, 1]}]}', "unknown category_id 8"),
        ('{"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1}], "annotations": []}',
         "lacks \\['height', 'width'\\]"),
    ],
)
def test_malformed_json_names_file_and_problem(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(AnnotationFormatError, match=message) as e:
        load_coco_json(path)
    assert str(path) in str(e.value)


def _custom_dataset(root: Path) -> DataConfig:
    """Three 32x40 images (the second one corrupt) with one box-only annotation each."""
    (root / "imgs").mkdir(parents=True)
    images, anns = [], []
    for i in range(3):
        name = f"{i}.png"
        if i == 1:
            (root / "imgs" / name).write_bytes(b"not an image")
        else:
            Image.fromarray(np.full((32, 40, 3), 60 * i, dtype=np.uint8)).save(root / "imgs" / name)
        images.append({"id": 10 + i, "file_name": name, "height": 32, "width": 40})
        anns.append({"id": i + 1, "image_id": 10 + i, "category_id": 4, "bbox": [2, 3, 10, 12], "iscrowd": 0})
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 4, "name": "x"}]}))
    return DataConfig(kind="custom", root=str(root), train_json="ann.json", val_json="ann.json",
                      train_images="imgs", val_images="imgs")


def test_unreadable_images_are_skipped_and_counted(tmp_path: Path) -> None:
    cfg = _custom_dataset(tmp_path)
    train = CocoInstances(resolve_split(cfg, "train"), train=True)
    image, target = train[1]  # corrupt -> replaced by the next image, counted
    assert target["image_id"] == 12 and target["skipped"] == 1
    # A box-only annotation gets its box as the mask.
    assert target["masks"].shape == (1, 32, 40) and int(target["masks"].sum()) == 10 * 12
    val = CocoInstances(resolve_split(cfg, "val"), train=False)
    batch = collate([val[0], val[1], val[2]])
    images, targets, skipped = batch["images"], batch["targets"], batch["skipped"]
    assert len(batch["skipped_files"]) == 1 and "1.png" in batch["skipped_files"][0]
    assert skipped == 1 and [t["image_id"] for t in targets] == [10, 12] and len(images) == 2


def test_lvis_images_found_through_coco_url(demo_coco: Path, tmp_path: Path) -> None:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    shutil.copytree(demo_coco / "val2017", root / "val2017")
    data = load_coco_json(demo_coco / "annotations" / "instances_val2017.json")
    for img in data["images"]:
        img["coco_url"] = f"http://images.cocodataset.org/val2017/{img.pop('file_name')}"
    for name in ("lvis_v1_train.json", "lvis_v1_val.json"):
        (root / "annotations" / name).write_text(json.dumps(data))
    (root / "train2017").mkdir()
    ds = CocoInstances(resolve_split(DataConfig(kind="lvis", root=str(root)), "val"), train=False)
    image, target = ds[0]
    assert image is not None and target["skipped"] == 0
    assert ds.image_path(ds.coco.imgs[ds.ids[0]]).parent == root / "val2017"


def test_repeat_factors_by_hand() -> None:
    # 10 images; category 1 in all of them, category 2 in one (f = 0.1), category 3 in two (f = 0.2).
    cats = [[1, 2], [1, 3], [1, 3]] + [[1]] * 6 + [[]]  # the last image has no annotations
    f = repeat_factors(cats, threshold=0.4)
    # r_c = max(1, sqrt(0.4 / f_c)): c1 -> 1 (f = 0.9), c2 -> 2, c3 -> sqrt(2); image = max over its c.
    expected = [2.0, math.sqrt(2), math.sqrt(2)] + [1.0] * 6 + [1.0]
    assert f.tolist() == pytest.approx(expected)


def test_repeat_factor_sampler_is_deterministic_sharded_and_unbiased() -> None:
    factors = torch.tensor([1.0, 2.5, 1.2, 3.0, 1.0, 1.7])
    n = int(factors.sum().floor())  # 10 samples per epoch
    full = RepeatFactorSampler(factors, seed=3, rank=0, world_size=1)
    full.set_epoch(4)
    order = list(full)
    again = RepeatFactorSampler(factors, seed=3, rank=0, world_size=1)
    again.set_epoch(4)
    assert order == list(again) and len(order) == n
    again.set_epoch(5)
    assert list(again) != order  # another epoch, another draw
    # Two ranks split the same global order.
    shards = []
    for rank in range(2):
        s = RepeatFactorSampler(factors, seed=3, rank=rank, world_size=2)
        s.set_epoch(4)
        shards.append(list(s))
    assert sorted(shards[0] + shards[1]) == sorted(order)
    assert shards[0] == order[0::2] and shards[1] == order[1::2]
    # Copy k of image i is yielded as i + k * N: within an epoch no index repeats (so each copy
    # gets its own augmentation), and images with factors >= 2 do come as several copies.
    for epoch in range(20):
        full.set_epoch(epoch)
        drawn = list(full)
        assert len(set(drawn)) == len(drawn)
        assert max(drawn) >= len(factors)
    # Over many epochs each image is drawn in proportion to its factor.
    counts = torch.zeros(len(factors))
    for epoch in range(400):
        full.set_epoch(epoch)
        counts += torch.bincount(torch.tensor(list(full)) % len(factors), minlength=len(factors))
    rate = counts / 400
    assert torch.allclose(rate, factors * n / factors.sum(), atol=0.12)
    # Resume mid-epoch: skip the first 2 batches of 2.
    full.set_epoch(7)
    ref = list(full)
    full.set_start_batch(2, 2)
    assert list(full) == ref[4:]
