"""The built-in demo datasets: COCO / ADE20k layouts, self-consistent labels, determinism, caching."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from demo_data import (
    DEMO_ADE_CLASSES,
    DEMO_COCO_CATEGORIES,
    IMAGE_SIDES,
    MARKER_NAME,
    demo_root,
    ensure_demo_ade,
    ensure_demo_coco,
    main,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# helpers (independent of the generator's internals)
# ------------------------------------------------------------------------------------------------


def decode(seg: list | dict, h: int, w: int) -> np.ndarray:
    """(h, w) bool mask of a COCO segmentation: polygons (merged), compressed or uncompressed RLE."""
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def tight_box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def load(coco_root: Path, split: str) -> tuple[COCO, dict[int, list[tuple[dict, np.ndarray]]]]:
    """COCO api object and, per image id, its annotations with decoded masks."""
    coco = COCO(str(coco_root / "annotations" / f"instances_{split}2017.json"))
    masks: dict[int, list[tuple[dict, np.ndarray]]] = defaultdict(list)
    for ann in coco.dataset["annotations"]:
        img = coco.imgs[ann["image_id"]]
        masks[img["id"]].append((ann, decode(ann["segmentation"], img["height"], img["width"])))
    return coco, masks


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def coco_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_coco(tmp_path_factory.mktemp("coco"), num_train=24, num_val=8, seed=0)


@pytest.fixture(scope="module")
def ade_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_ade(tmp_path_factory.mktemp("ade"), num_train=16, num_val=8, seed=0)


# ------------------------------------------------------------------------------------------------
# COCO layout and annotations
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split,count", [("train", 24), ("val", 8)])
def test_coco_layout_and_schema(coco_small: Path, split: str, count: int):
    coco, _ = load(coco_small, split)
    data = coco.dataset
    assert set(data) >= {"info", "licenses", "images", "annotations", "categories"}
    assert [c["id"] for c in data["categories"]] == [1, 3, 7]  # non-contiguous, as COCO
    assert all(set(c) == {"id", "name", "supercategory"} for c in data["categories"])
    assert len(data["images"]) == count
    for img in data["images"]:
        pixels = cv2.imread(str(coco_small / f"{split}2017" / img["file_name"]))
        assert pixels is not None and pixels.shape == (img["height"], img["width"], 3)
        assert img["height"] in IMAGE_SIDES and img["width"] in IMAGE_SIDES
    assert any(img["height"] != img["width"] for img in data["images"])
    ann_ids = [a["id"] for a in data["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids)
    for ann in data["annotations"]:
        assert set(ann) == {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}
        assert ann["image_id"] in coco.imgs and ann["category_id"] in coco.cats


def test_coco_train_and_val_ids_are_disjoint(coco_small: Path):
    train, _ = load(coco_small, "train")
    val, _ = load(coco_small, "val")
    assert not set(train.imgs) & set(val.imgs)
    assert not set(train.anns) & set(val.anns)


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_area_and_bbox_match_the_decoded_masks(coco_small: Path, split: str):
    coco, masks = load(coco_small, split)
    for image_id, entries in masks.items():
        img = coco.imgs[image_id]
        for ann, mask in entries:
            assert mask.any(), ann["id"]
            assert ann["area"] == mask.sum(), ann["id"]
            np.testing.assert_allclose(ann["bbox"], tight_box(mask), atol=1.0)
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
            # pycocotools' own decoder agrees with ours
            assert np.array_equal(coco.annToMask(ann).astype(bool), mask)
            if isinstance(ann["segmentation"], list):
                assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])


@pytest.mark.parametrize("split", ["train", "val"])
def test_coco_visible_masks_do_not_overlap(coco_small: Path, split: str):
    _, masks = load(coco_small, split)
    for entries in masks.values():
        coverage = np.sum([m.astype(np.int32) for _, m in entries], axis=0)
        assert coverage.max() <= 1


def test_coco_has_crowds_empty_images_all_sizes_and_both_formats(coco_small: Path, demo_coco: Path):
    coco, _ = load(coco_small, "train")
    anns = coco.dataset["annotations"]
    crowds = [a for a in anns if a["iscrowd"]]
    assert crowds and all(isinstance(a["segmentation"], dict) for a in crowds)
    assert any(not coco.getAnnIds(imgIds=i) for i in coco.imgs)
    areas = np.array([a["area"] for a in anns if not a["iscrowd"]])
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any() and (areas >= 96**2).any()
    things = [a["segmentation"] for a in anns if not a["iscrowd"]]
    polygons = [s for s in things if isinstance(s, list)]
    assert len(polygons) > len(things) / 2  # mostly polygons ...
    # ... some RLE (visible parts with a hole: rare with few objects, so counted on the full set)
    full = load(demo_coco, "train")[0].dataset["annotations"]
    assert any(isinstance(a["segmentation"], dict) for a in full if not a["iscrowd"])
    assert any(len(s) > 1 for s in polygons)  # and objects split into several parts by occluders
    assert {a["category_id"] for a in anns} == {c["id"] for c in DEMO_COCO_CATEGORIES}


def _shape_metrics(mask: np.ndarray) -> dict[str, float]:
    """Hole presence, solidity, min-area-rectangle aspect and fill of a single-part mask."""
    m = mask.astype(np.uint8)
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    points = np.concatenate(contours)[:, 0, :].astype(np.float32)
    (_, _), (rw, rh), _ = cv2.minAreaRect(points)
    hull = cv2.contourArea(cv2.convexHull(points))
    area = float(mask.sum())
    perimeter_correction = 0.5 * cv2.arcLength(cv2.convexHull(points), True) + 1.0  # hull of pixel centres
    return {
        "hole": float((hierarchy[0][:, 3] >= 0).any()),
        "solidity": area / (hull + perimeter_correction),
        "aspect": max(rw, rh) / max(min(rw, rh), 1.0),
        "fill": area / ((rw + 1) * (rh + 1)),
    }


def test_coco_shape_decides_the_class(demo_coco: Path):
    """Isolated, untruncated objects have the geometry their category names (colour plays no part).

    Uses the default-size set: few objects in a small set are both untouched and uncut."""
    expect = {
        "circle": lambda s: not s["hole"] and s["aspect"] < 1.15 and s["solidity"] > 0.93,
        "ellipse": lambda s: not s["hole"] and s["aspect"] > 1.6 and s["solidity"] > 0.93,
        "square": lambda s: not s["hole"] and s["aspect"] < 1.15 and s["fill"] > 0.88,
        "triangle": lambda s: not s["hole"] and 0.4 < s["fill"] < 0.65 and s["solidity"] > 0.9,
        "star": lambda s: not s["hole"] and s["solidity"] < 0.8,
        "ring": lambda s: bool(s["hole"]),
    }
    names = {c["id"]: c["name"] for c in DEMO_COCO_CATEGORIES}
    checked = defaultdict(int)
    for split in ("train", "val"):
        coco, masks = load(demo_coco, split)
        for image_id, entries in masks.items():
            img = coco.imgs[image_id]
            union = np.sum([m for _, m in entries], axis=0).astype(bool)
            for ann, mask in entries:
                # Every hidden pixel of an object is visible on some object above it, so an object
                # that touches no other mask is whole (unless the image border cuts it).
                grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
                isolated = not (grown & union & ~mask).any()
                x, y, w, h = ann["bbox"]
                inside = x > 0 and y > 0 and x + w < img["width"] and y + h < img["height"]
                if ann["iscrowd"] or not isolated or not inside or ann["area"] < 400:
                    continue
                name = names[ann["category_id"]]
                metrics = _shape_metrics(mask)
                assert expect[name](metrics), (split, ann["id"], name, metrics)
                checked[name] += 1
    assert sum(checked.values()) >= 12 and len(checked) == len(DEMO_COCO_CATEGORIES), checked


def test_coco_objects_stand_out_from_their_surroundings(coco_small: Path):
    """Masks line up with the pixels: the inside of an object differs in colour from a band around it."""
    contrasts = []
    for split in ("train", "val"):
        coco, masks = load(coco_small, split)
        for image_id, entries in masks.items():
            img = cv2.imread(str(coco_small / f"{split}2017" / coco.imgs[image_id]["file_name"])).astype(np.float32)
            union = np.any([m for _, m in entries], axis=0)
            for ann, mask in entries:
                if ann["iscrowd"] or ann["area"] < 200:
                    continue
                band = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~union
                if band.sum() < 30:
                    continue
                contrasts.append(np.linalg.norm(img[mask].mean(0) - img[band].mean(0)))
    contrasts = np.array(contrasts)
    assert len(contrasts) >= 20
    assert np.median(contrasts) > 40 and (contrasts > 15).mean() > 0.85, np.percentile(contrasts, [5, 25, 50])


# ------------------------------------------------------------------------------------------------
# ADE layout and labels
# ------------------------------------------------------------------------------------------------


def test_ade_layout_classes_and_labels(ade_small: Path):
    assert ade_small.name == "ADEChallengeData2016"
    assert (ade_small / "classes.txt").read_text().splitlines() == list(DEMO_ADE_CLASSES)
    num_classes = len(DEMO_ADE_CLASSES)
    seen = np.zeros(num_classes + 1, dtype=np.int64)
    shapes = set()
    for folder, prefix, count in (("training", "ADE_train", 16), ("validation", "ADE_val", 8)):
        images = sorted((ade_small / "images" / folder).glob("*.jpg"))
        labels = sorted((ade_small / "annotations" / folder).glob("*.png"))
        assert [p.name for p in images] == [f"{prefix}_{i:08d}.jpg" for i in range(1, count + 1)]
        assert [p.stem for p in labels] == [p.stem for p in images]
        for image_path, label_path in zip(images, labels):
            image = cv2.imread(str(image_path))
            label = cv2.imread(str(label_path), cv2.IMREAD_UNCHANGED)
            assert label.dtype == np.uint8 and label.ndim == 2
            assert image.shape[:2] == label.shape
            assert label.max() <= num_classes
            shapes.add(label.shape)
            if folder == "training":
                seen += np.bincount(label.ravel(), minlength=num_classes + 1)
    assert seen[0] > 0  # some ignore pixels
    assert (seen[1:] > 0).all(), seen  # every class occurs in training
    assert any(h != w for h, w in shapes)


def _pixel_features(image: np.ndarray) -> np.ndarray:
    """(h*w, 6): local 7x7 mean and standard deviation of each colour channel."""
    image = image.astype(np.float32)
    mean = cv2.blur(image, (7, 7))
    std = np.sqrt(np.maximum(cv2.blur(image * image, (7, 7)) - mean**2, 0.0))
    return np.concatenate([mean, std], axis=2).reshape(-1, 6)


def test_ade_classes_are_learnable_from_texture(ade_small: Path):
    """A nearest-centroid classifier on local colour statistics, fit on training images, beats the
    majority class by a wide margin on validation images: labels match distinct textures."""

    def pixels(folder: str) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for path in sorted((ade_small / "images" / folder).glob("*.jpg")):
            label = cv2.imread(str(ade_small / "annotations" / folder / f"{path.stem}.png"), -1).ravel()
            xs.append(_pixel_features(cv2.imread(str(path)))[label > 0])
            ys.append(label[label > 0])
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = pixels("training")
    x_val, y_val = pixels("validation")
    mu, sd = x_train.mean(0), x_train.std(0)
    centroids = np.stack([((x_train - mu) / sd)[y_train == k].mean(0) for k in range(1, len(DEMO_ADE_CLASSES) + 1)])
    distances = (((x_val - mu) / sd)[:, None, :] - centroids[None]) ** 2
    accuracy = float((distances.sum(-1).argmin(1) + 1 == y_val).mean())
    majority = np.bincount(y_val).max() / len(y_val)
    assert accuracy > 0.6 and accuracy > majority + 0.25, (accuracy, majority)


# ------------------------------------------------------------------------------------------------
# determinism, caching, entry points
# ------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path):
    a = tree_bytes(ensure_demo_coco(tmp_path / "a", num_train=6, num_val=3, seed=0))
    b = tree_bytes(ensure_demo_coco(tmp_path / "b", num_train=6, num_val=3, seed=0))
    c_root = ensure_demo_coco(tmp_path / "c", num_train=6, num_val=3, seed=1)
    assert a == b
    c = tree_bytes(c_root)
    assert c["annotations/instances_train2017.json"] != a["annotations/instances_train2017.json"]
    first = "train2017/000000000001.jpg"
    assert not np.array_equal(cv2.imread(str(c_root / first)), cv2.imread(str(tmp_path / "a/demo_coco" / first)))

    ade_a = tree_bytes(ensure_demo_ade(tmp_path / "a", num_train=4, num_val=2, seed=0))
    ade_b = tree_bytes(ensure_demo_ade(tmp_path / "b", num_train=4, num_val=2, seed=0))
    ade_c = tree_bytes(ensure_demo_ade(tmp_path / "c", num_train=4, num_val=2, seed=1))
    assert ade_a == ade_b
    assert ade_a["annotations/training/ADE_train_00000001.png"] != ade_c["annotations/training/ADE_train_00000001.png"]


def test_more_images_keep_the_first_ones(tmp_path: Path):
    """Each image has its own random stream, so a bigger set extends a smaller one."""
    small = ensure_demo_coco(tmp_path / "s", num_train=3, num_val=1)
    large = ensure_demo_coco(tmp_path / "l", num_train=5, num_val=1)
    for name in ("000000000001.jpg", "000000000003.jpg"):
        assert (small / "train2017" / name).read_bytes() == (large / "train2017" / name).read_bytes()
    small_anns = json.loads((small / "annotations/instances_train2017.json").read_text())["annotations"]
    large_anns = json.loads((large / "annotations/instances_train2017.json").read_text())["annotations"]
    assert small_anns == large_anns[: len(small_anns)]


def test_generation_is_cached_and_redone_when_marker_missing_or_stale(tmp_path: Path):
    root = ensure_demo_coco(tmp_path, num_train=3, num_val=1)
    ann = root / "annotations" / "instances_train2017.json"
    stamp = ann.stat().st_mtime_ns
    assert ensure_demo_coco(tmp_path, num_train=3, num_val=1) == root
    assert ann.stat().st_mtime_ns == stamp  # complete: not regenerated

    (root / MARKER_NAME).unlink()  # incomplete: regenerated
    assert ensure_demo_coco(tmp_path, num_train=3, num_val=1) == root
    assert (root / MARKER_NAME).exists() and ann.stat().st_mtime_ns != stamp

    stamp = ann.stat().st_mtime_ns
    marker = json.loads((root / MARKER_NAME).read_text())
    (root / MARKER_NAME).write_text(json.dumps({**marker, "generator_version": -1}))  # older generator
    ensure_demo_coco(tmp_path, num_train=3, num_val=1)
    assert ann.stat().st_mtime_ns != stamp

    ensure_demo_coco(tmp_path, num_train=4, num_val=1)  # other parameters
    assert len(list((root / "train2017").glob("*.jpg"))) == 4
    # no temporary folders are left behind
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["demo_coco"]


def test_half_written_folder_is_replaced(tmp_path: Path):
    broken = tmp_path / "demo_ade"
    (broken / "ADEChallengeData2016" / "images").mkdir(parents=True)
    (broken / "junk.txt").write_text("left by a killed run")
    ade = ensure_demo_ade(tmp_path, num_train=2, num_val=1)
    assert not (broken / "junk.txt").exists()
    assert len(list((ade / "annotations" / "training").glob("*.png"))) == 2


def test_bad_arguments_get_clear_errors(tmp_path: Path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OSError, match="TARGET_SSL_CACHE"):
        ensure_demo_coco(blocker / "sub", num_train=1, num_val=1)
    with pytest.raises(ValueError, match="num_train"):
        ensure_demo_ade(tmp_path, num_train=0)


def test_session_fixtures_use_the_default_cache(demo_coco: Path, demo_ade: Path):
    assert demo_root() == Path(os.environ["TARGET_SSL_CACHE"]) / "demo"
    assert demo_coco == demo_root() / "demo_coco"
    assert demo_ade == demo_root() / "demo_ade" / "ADEChallengeData2016"
    assert len(list((demo_coco / "train2017").glob("*.jpg"))) == 96
    assert len(list((demo_coco / "val2017").glob("*.jpg"))) == 24
    assert len(list((demo_ade / "images" / "training").glob("*.jpg"))) == 96
    assert len(list((demo_ade / "annotations" / "validation").glob("*.png"))) == 24


def test_command_line_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    main(["--root", str(tmp_path / "inproc"), "--num-train", "2", "--num-val", "1"])
    out = capsys.readouterr().out
    assert str(tmp_path / "inproc" / "demo_coco") in out and "ADEChallengeData2016" in out

    cmd = [sys.executable, "-m", "demo_data", "--root", str(tmp_path / "cli"), "--num-train", "1", "--num-val", "1"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli" / "demo_coco" / "annotations" / "instances_val2017.json").exists()
    assert (tmp_path / "cli" / "demo_ade" / "ADEChallengeData2016" / "classes.txt").exists()
