"""The three loaders decode through engine.images and report skips the same way.

Issue 11 cases 2 (16-bit PNGs corrupted in detection and pretraining) and 5 (segmentation trained
on truncated JPEGs decoded partially).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.images import decode_rgb
from pretrain.data import UnlabeledImages
from pretrain.data import collate as pretrain_collate
from transfer.detection.config import DataConfig
from transfer.detection.datasets import CocoInstances, resolve_split
from transfer.detection.datasets import collate as det_collate
from transfer.segmentation.data import SegDataset, collate_train
from transfer.segmentation.transforms import TrainTransform

GRAY16 = np.array([[0, 1000, 30000, 65535]] * 3, dtype=np.uint16)  # (3, 4)
SCALED = np.rint(GRAY16 * 255.0 / 65535.0).astype(np.uint8)


def _truncated_jpeg(path: Path, h: int = 32, w: int = 40) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _as_array(source: Path, name: str | None = None) -> torch.Tensor:
    """A pretraining transform (source -> tensor) that keeps the decoded pixels as they are."""
    return torch.from_numpy(np.asarray(decode_rgb(source, name=name)[0]).copy())


def test_pretraining_16bit_gray_is_scaled_and_batches_report_skips(tmp_path: Path) -> None:
    Image.fromarray(GRAY16).save(tmp_path / "g16.png")
    _truncated_jpeg(tmp_path / "cut.jpg")
    ds = UnlabeledImages([tmp_path / "g16.png"], transform=_as_array)
    np.testing.assert_array_equal(ds[0]["images"][:, :, 1].numpy(), SCALED)  # not almost all white
    broken = UnlabeledImages([tmp_path / "cut.jpg", tmp_path / "g16.png"], transform=_as_array, max_retries=20)
    batch = pretrain_collate([broken[0], broken[1]])
    assert isinstance(batch["skipped"], int) and batch["skipped"] >= 1
    assert len(batch["skipped_files"]) == batch["skipped"] and "cut.jpg" in batch["skipped_files"][0]


def _coco(root: Path) -> DataConfig:
    (root / "imgs").mkdir(parents=True)
    Image.fromarray(GRAY16).save(root / "imgs" / "g16.png")
    _truncated_jpeg(root / "imgs" / "cut.jpg", 3, 4)
    images = [{"id": 1, "file_name": "cut.jpg", "height": 3, "width": 4},
              {"id": 2, "file_name": "g16.png", "height": 3, "width": 4}]
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [0, 0, 2, 2], "iscrowd": 0} for i in (1, 2)]
    cats = [{"id": 1, "name": "x"}]
    (root / "a.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return DataConfig(kind="custom", root=str(root), train_json="a.json", val_json="a.json",
                      train_images="imgs", val_images="imgs")


def test_detection_16bit_png_is_uint8_rgb_and_batches_report_skips(tmp_path: Path) -> None:
    cfg = _coco(tmp_path)
    val = CocoInstances(resolve_split(cfg, "val"), train=False)
    image, _ = val[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 3, 4)
    np.testing.assert_array_equal(image[0].numpy(), SCALED)  # was uint16 / 255 -> inputs up to ~257
    train = CocoInstances(resolve_split(cfg, "train"), train=True)
    batch = det_collate([train[0], train[1]])
    assert set(batch) == {"images", "targets", "skipped", "skipped_files"}
    assert batch["skipped"] == 1 and "cut.jpg" in batch["skipped_files"][0]
    assert all(im.dtype == torch.uint8 for im in batch["images"]) and len(batch["targets"]) == 2


def test_segmentation_skips_truncated_jpeg_instead_of_decoding_it(tmp_path: Path) -> None:
    for split in ("training", "validation"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "annotations" / split).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(tmp_path / f"images/training/im{i}.png")
        Image.fromarray(rng.integers(0, 3, (32, 40), dtype=np.uint8)).save(tmp_path / f"annotations/training/im{i}.png")
    (tmp_path / "images/training/im0.png").unlink()
    _truncated_jpeg(tmp_path / "images/training/im0.jpg")  # cv2 decoded the missing half as grey
    ds = SegDataset(tmp_path, "train", 3, TrainTransform(crop_size=(32, 32), scale=(128, 32)))
    batch = collate_train([ds[0], ds[1]])
    assert batch["skipped"] == 1 and len(batch["skipped_files"]) == 1
    assert "im0.jpg" in batch["skipped_files"][0] and "truncated" in batch["skipped_files"][0]
