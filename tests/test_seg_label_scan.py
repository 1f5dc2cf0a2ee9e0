"""Segmentation labels checked at start-up (issue 11 case 8): size, mode and class ids stop the
run before the first step, naming the files and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import ConfigError
from transfer.segmentation.data import LabelScanError, SegDataset, list_pairs, scan_labels
from transfer.segmentation.transforms import TrainTransform

TF = TrainTransform(crop_size=(32, 32), scale=(128, 32))


def _dataset(root: Path, n: int = 4, num_classes: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(root / f"images/{split}/im{i}.png")
            label = rng.integers(0, num_classes + 1, (32, 40), dtype=np.uint8)  # 0 = other, 1..K
            label[0, 0] = 255  # the ignore value is allowed
            Image.fromarray(label).save(root / f"annotations/{split}/im{i}.png")
    return root


def test_clean_labels_pass_and_every_value_is_read_when_asked(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    scan = scan_labels(list_pairs(root, "train"), 3, read_values=None)
    assert scan.pairs == 4 and scan.values_read == 4 and not any(scan.problems.values())
    assert scan_labels(list_pairs(root, "train"), 3, read_values=2).values_read == 2
    SegDataset(root, "train", 3, TF)  # no error


def test_bad_labels_stop_the_run_at_start_up(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    ann = root / "annotations" / "training"
    Image.fromarray(np.ones((16, 40), np.uint8)).save(ann / "im0.png")  # wrong size
    Image.fromarray(np.ones((32, 40, 3), np.uint8)).save(ann / "im1.png")  # RGB rendering
    Image.fromarray(np.full((32, 40), 9, np.uint8)).save(ann / "im2.png")  # id 9 with K=3
    with pytest.raises(LabelScanError) as info:
        SegDataset(root, "train", 3, TF)
    msg = str(info.value)
    assert isinstance(info.value, ConfigError)
    assert "1 x label size differs" in msg and "im0.png: 40x16, image im0.png 40x32" in msg
    assert "1 x label is not a single-channel" in msg and "im1.png: mode RGB" in msg
    assert "1 x label has class ids" in msg and "im2.png has class id 9" in msg
    assert "fix: set data.num_classes" in msg and "tools/check_data.py" in msg
    SegDataset(root, "train", 3, TF, check_values=None)  # the scan can be switched off


def test_unreadable_files_are_counted_not_fatal(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    (root / "images" / "training" / "im3.png").write_bytes(b"junk")
    scan = scan_labels(list_pairs(root, "train"), 3)
    assert len(scan.problems["unreadable"]) == 1 and "im3.png" in scan.problems["unreadable"][0]
    SegDataset(root, "train", 3, TF)  # left to the skip budget
