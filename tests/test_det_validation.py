"""COCO / LVIS json validation before the first step (issue 11 case 3, and the category lists of
issue 11 case 9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transfer.detection.config import DataConfig
from transfer.detection.datasets import (
    AnnotationFormatError,
    CocoInstances,
    check_same_categories,
    load_coco_json,
    resolve_split,
)

SQUARE = [2.0, 2.0, 20.0, 2.0, 20.0, 20.0, 2.0, 20.0]


def _write(root: Path, anns: list[dict], cats: list[dict] | None = None, name: str = "a.json") -> Path:
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "imgs" / "0.png")
    data = {"images": [{"id": 1, "file_name": "0.png", "height": 32, "width": 32}], "annotations": anns,
            "categories": cats or [{"id": 1, "name": "x"}]}
    (root / name).write_text(json.dumps(data))
    return root / name


def _ann(ann_id: int, segmentation, bbox=(2, 2, 18, 18)) -> dict:
    return {"id": ann_id, "image_id": 1, "category_id": 1, "bbox": list(bbox), "iscrowd": 0,
            "segmentation": segmentation, "area": 100.0}


def test_degenerate_polygons_and_boxes_are_dropped_with_their_ids(tmp_path: Path, ssl_log) -> None:
    anns = [
        _ann(11, [[5.0, 5.0, 9.0, 9.0]]),  # 2 points
        _ann(12, [[5.0, 5.0]]),  # 1 point
        _ann(13, [SQUARE], bbox=(2, 2, 0, 18)),  # zero width
        _ann(14, [SQUARE, [1.0, 1.0, 3.0]]),  # one good polygon, one odd-length: keeps the good one
        _ann(15, [SQUARE]),
    ]
    path = _write(tmp_path, anns)
    data = load_coco_json(path)
    assert [a["id"] for a in data["annotations"]] == [14, 15]
    assert data["annotations"][0]["segmentation"] == [SQUARE]
    assert "dropped 2 annotation(s) with no polygon of >= 3 points, e.g. ids 11, 12" in ssl_log.text
    assert "dropped 1 annotation(s) with a box of width or height <= 0, e.g. ids 13" in ssl_log.text
    assert len(load_coco_json(path, drop=False)["annotations"]) == 5


def test_training_on_the_image_no_longer_crashes(tmp_path: Path) -> None:
    _write(tmp_path, [_ann(11, [[5.0, 5.0]]), _ann(15, [SQUARE])])
    cfg = DataConfig(kind="custom", root=str(tmp_path), train_json="a.json", val_json="a.json",
                     train_images="imgs", val_images="imgs")
    ds = CocoInstances(resolve_split(cfg, "train"), train=True)
    _, target = ds[0]  # pycocotools raised on the 1-point polygon here
    assert target["masks"].shape == (1, 32, 32) and int(target["masks"].sum()) > 0


def test_category_lists_that_differ_name_both_files(tmp_path: Path) -> None:
    _write(tmp_path, [_ann(1, [SQUARE])], [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}], "train.json")
    _write(tmp_path, [_ann(1, [SQUARE])], [{"id": 1, "name": "x"}, {"id": 3, "name": "z"}], "val.json")
    cfg = DataConfig(kind="custom", root=str(tmp_path), train_json="train.json", val_json="val.json",
                     train_images="imgs", val_images="imgs")
    train = CocoInstances(resolve_split(cfg, "train"), train=True)
    val = CocoInstances(resolve_split(cfg, "val"), train=False)
    with pytest.raises(AnnotationFormatError, match=r"train\.json.*val\.json.*only in train\.json: ids \[2\]; "
                                                    r"only in val\.json: ids \[3\]"):
        check_same_categories(train, val)
    check_same_categories(train, train)
