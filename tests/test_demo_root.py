"""Loading a demo config generates no data; the dataset builders resolve data.root="demo"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_loading_the_demo_configs_writes_nothing(tmp_path: Path) -> None:
    # A fresh process and an empty cache: importing demo_data earlier in this session must not matter.
    code = (
        "from engine.config import load_config\n"
        "d = load_config('demo_mask_rcnn_vit_tiny.py', ['det_configs'])\n"
        "s = load_config('demo_upernet_vit_tiny.py', ['seg_configs'])\n"
        "print(d.data.root, s.data.root)\n"
    )
    env = {**os.environ, "TARGET_SSL_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["demo", "demo"]
    assert not (tmp_path / "cache").exists()


def test_builders_resolve_the_demo_root(demo_coco: Path, demo_ade: Path) -> None:
    from transfer.detection.datasets import resolve_split
    from transfer.segmentation.data import SegDataset, list_pairs, read_class_names
    from transfer.segmentation.transforms import EvalTransform

    det = load_config("demo_mask_rcnn_vit_tiny.py", [REPO / "det_configs"])
    files = resolve_split(det.data, "val")
    assert files.image_dir == demo_coco / "val2017"
    assert files.ann_file == demo_coco / "annotations" / "instances_val2017.json"

    seg = load_config("demo_upernet_vit_tiny.py", [REPO / "seg_configs"])
    assert read_class_names(seg.data.root) == (demo_ade / "classes.txt").read_text().split()
    pairs = list_pairs(seg.data.root, "val")
    assert len(pairs) == 24 and all(img.parent == demo_ade / "images" / "validation" for img, _ in pairs)
    dataset = SegDataset(seg.data.root, "val", 8, EvalTransform(scale=seg.data.scale))
    assert dataset.root == demo_ade and dataset.pairs == pairs


def test_a_folder_called_demo_is_written_with_a_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transfer.segmentation.data import resolve_root

    monkeypatch.chdir(tmp_path)
    assert resolve_root("./demo") == Path("demo")
