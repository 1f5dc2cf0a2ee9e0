"""Unlabeled datasets: layouts and their errors, broken-image accounting, per-sample determinism."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.skips import SkipBudget, TooManyBrokenFilesError
from pretrain.data import (
    BrokenImagesError,
    DatasetLayoutError,
    UnlabeledImages,
    build_transform,
    collate,
    list_images,
)
from pretrain.masking import SplitMasking


def _write_images(folder: Path, n: int, size: int = 40) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img_{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_coco_lists_the_instances_json(demo_coco: Path) -> None:
    files = list_images("coco", demo_coco)
    listed = json.loads((demo_coco / "annotations" / "instances_train2017.json").read_text())["images"]
    assert sorted(f.name for f in files) == sorted(im["file_name"] for im in listed)
    assert all(f.parent == demo_coco / "train2017" for f in files)
    assert list_images("lvis", demo_coco) == files  # LVIS = COCO's images
    assert list_images("demo") == list_images("coco", demo_coco)


def test_coco_folder_without_json_and_missing_listed_file(tmp_path: Path, demo_coco: Path) -> None:
    root = tmp_path / "coco"
    shutil.copytree(demo_coco / "train2017", root / "train2017")
    assert len(list_images("coco", root)) == len(list(root.glob("train2017/*.jpg")))
    (root / "annotations").mkdir()
    shutil.copy(demo_coco / "annotations" / "instances_train2017.json", root / "annotations")
    victim = sorted((root / "train2017").iterdir())[0]
    victim.unlink()
    with pytest.raises(DatasetLayoutError, match=victim.name):
        list_images("coco", root)


def test_ade20k_accepts_the_root_or_its_parent(demo_ade: Path) -> None:
    files = list_images("ade20k", demo_ade)
    assert files and all(f.parent == demo_ade / "images" / "training" for f in files)
    assert list_images("ade20k", demo_ade.parent) == files


def test_folder_is_recursive_and_env_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_images(tmp_path / "a" / "b", 2)
    _write_images(tmp_path / "c", 1)
    (tmp_path / "notes.txt").write_text("not an image")
    assert len(list_images("folder", tmp_path)) == 3
    monkeypatch.setenv("TARGET_SSL_FOLDER_ROOT", str(tmp_path))
    assert len(list_images("folder")) == 3


def test_missing_roots_show_the_expected_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetLayoutError, match=r"(?s)does not exist.*train2017/\*\.jpg"):
        list_images("coco", tmp_path / "nowhere")
    (tmp_path / "ade").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"(?s)images/training.*Expected ADE20k layout"):
        list_images("ade20k", tmp_path / "ade")
    for var in ("TARGET_SSL_COCO_ROOT", "TARGET_SSL_DATA_ROOT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(DatasetLayoutError, match="TARGET_SSL_COCO_ROOT"):
        list_images("coco")


def _broken_folder(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    good = _write_images(tmp_path / "imgs", 6)
    truncated = tmp_path / "imgs" / "truncated.jpg"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:300])
    garbage = tmp_path / "imgs" / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    return good, [truncated, garbage]


def test_broken_images_are_replaced_and_counted(tmp_path: Path) -> None:
    good, broken = _broken_folder(tmp_path)
    files = sorted(good + broken)
    ds = UnlabeledImages(files, build_transform("default", 32), SplitMasking((2, 2)), seed=0)
    samples = [ds[i] for i in range(len(ds))]
    assert all(s["images"].shape == (3, 32, 32) for s in samples)
    batch = collate(samples)
    assert batch["images"].shape == (8, 3, 32, 32) and batch["ids_a"].shape == (8, 2)
    assert batch["skipped"] == sum(s["skipped"] for s in samples) >= 2
    names = " ".join(batch["skipped_files"])
    assert "truncated.jpg" in names and "garbage.png" in names

    seen = len(batch["images"]) + batch["skipped"]
    monitor = SkipBudget(max_fraction=0.5, min_seen=1)
    monitor.update(batch["skipped"], seen, batch["skipped_files"])
    monitor.check()  # 2 of 10 attempts: under 50%
    assert monitor.skipped == batch["skipped"]
    strict = SkipBudget(max_fraction=0.01, min_seen=5)
    strict.update(batch["skipped"], seen, batch["skipped_files"])
    with pytest.raises(TooManyBrokenFilesError, match=r"(?s)could not be read.*(truncated\.jpg|garbage\.png)"):
        strict.check()


def test_only_broken_images_fail_with_a_clear_message(tmp_path: Path) -> None:
    _, broken = _broken_folder(tmp_path)
    ds = UnlabeledImages(broken, build_transform("default", 32), max_retries=3)
    with pytest.raises(BrokenImagesError, match="could not be read"):
        ds[0]


def test_samples_depend_only_on_seed_epoch_index(tmp_path: Path) -> None:
    files = _write_images(tmp_path, 4)
    ds = UnlabeledImages(files, build_transform("small", 32), SplitMasking((2, 2)), seed=3)
    torch.manual_seed(0)
    a = ds[1]
    torch.manual_seed(123)  # the global RNG plays no part...
    b = ds[1]
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["ids_a"], b["ids_a"])
    state = torch.get_rng_state()
    ds[2]
    assert torch.equal(state, torch.get_rng_state())  # ...and is not consumed
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["images"], a["images"])


def test_augmentation_presets(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8)).save(path)
    for preset in ("default", "ade20k", "mae", "small"):
        out = build_transform(preset, 48)(path)
        assert out.shape == (3, 48, 48) and out.dtype == torch.uint8
    assert build_transform("ade20k", 48).scale == (0.08, 0.25)
    assert build_transform("mae", 48).scale == (0.2, 1.0)
    assert build_transform("default", 48).scale == (0.08, 1.0)
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_transform("strong", 48)


def test_auto_recipe_follows_the_method_and_the_dataset_size() -> None:
    from pretrain.config import SMALL_DATASET_IMAGES, default_config
    from pretrain.loop import augment_preset, make_plan

    big, small = SMALL_DATASET_IMAGES, SMALL_DATASET_IMAGES - 1
    assert augment_preset(default_config("splitmask", "coco"), 118_287) == "default"
    assert augment_preset(default_config("mae", "coco"), 118_287) == "mae"
    assert augment_preset(default_config("splitmask", "ade20k"), 20_210) == "ade20k"  # its own crop rule
    for method in ("splitmask", "beit", "mae"):  # Cars / DomainNet-sized: the small-data recipe
        assert augment_preset(default_config(method, "folder"), small) == "small"
        assert augment_preset(default_config(method, "folder"), big) != "small"
    assert augment_preset(default_config("dino", "folder"), small) == "default"  # DINO has its multi-crop
    explicit = default_config("splitmask", "folder")
    explicit.data.augment = "default"
    assert augment_preset(explicit, small) == "default"
    # MAE warms up for 40 of 800 epochs; the others 10 of 300.
    mae, sm = default_config("mae", "coco"), default_config("splitmask", "coco")
    assert make_plan(mae, 1000, 1).warmup_steps == round(3000 / 20 * (1000 // 64))
    assert make_plan(sm, 1000, 1).warmup_steps == round(3000 / 30 * (1000 // 64))
    assert mae.model.drop_path == 0.0 and sm.model.drop_path == 0.1
