"""tools/check_data.py: a full report of a dataset's problems before training (issue 11)."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("check_data_tool", REPO / "tools" / "check_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[:300])


def _coco(root: Path) -> None:
    (root / "annotations").mkdir(parents=True)
    for split, cats in (("train2017", [1, 2]), ("val2017", [1, 3])):
        (root / split).mkdir()
        Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(root / split / "a.jpg")
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / split / "b.jpg")  # json says 40x32
        _truncated_jpeg(root / split / "c.jpg")
        images = [{"id": i, "file_name": f"{n}.jpg", "height": 32, "width": 40} for i, n in enumerate("abc", 1)]
        if split == "val2017":
            images.append({"id": 4, "file_name": "d.jpg", "height": 32, "width": 40})
        anns = [{"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 4, 4]]},
                {"id": 8, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5]},
                {"id": 9, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]}]
        data = {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in cats]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


@pytest.mark.slow
def test_coco_report_lists_every_kind_of_problem(tmp_path: Path) -> None:
    _coco(tmp_path)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "check_data.py"), "--data", "coco",
                           "--data-root", str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = proc.stdout
    assert proc.returncode == 1, proc.stderr
    assert "train images (instances_train2017.json): 3" in out and "val annotations: 3" in out
    assert "unreadable image: 2" in out and "c.jpg" in out and "truncated" in out.lower()
    assert "image size differs from the json (skipped in training): 2" in out and "b.jpg: 10x10, json says 40x32" in out
    assert "no polygon of >= 3 points (dropped in training): 2" in out and "annotation id 7" in out
    assert "width or height <= 0 (dropped in training): 2" in out and "annotation id 8" in out
    assert "missing image: 1" in out and "d.jpg" in out
    assert "category lists differ between splits: 1" in out and "only in instances_train2017.json: [2]" in out


def test_ade20k_and_folder_reports(tmp_path: Path, capsys) -> None:
    tool = _tool()
    root = tmp_path / "ADEChallengeData2016"
    rng = np.random.default_rng(0)
    for split in ("training", "validation"):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(root / f"images/{split}/{i}.png")
            Image.fromarray(rng.integers(0, 4, (32, 40), dtype=np.uint8)).save(root / f"annotations/{split}/{i}.png")
    (root / "classes.txt").write_text("a\nb\nc\n")
    assert tool.main(["--data", "ade20k", "--data-root", str(tmp_path)]) == 0
    assert "problems: none" in capsys.readouterr().out
    Image.fromarray(np.full((32, 40), 7, np.uint8)).save(root / "annotations/validation/1.png")
    _truncated_jpeg(root / "images/training/2.png")
    assert tool.main(["--data", "ade20k", "--data-root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "label has class ids >= num_classes that are not the ignore value: 1" in out and "1.png has class id 7" in out
    assert "unreadable image: 1" in out and "2.png" in out
    assert tool.main(["--data", "folder", "--data-root", str(root / "images")]) == 1
    assert "images: 6" in capsys.readouterr().out
    assert tool.main(["--data", "folder", "--data-root", str(tmp_path / "none")]) == 2
    assert "error:" in capsys.readouterr().err
