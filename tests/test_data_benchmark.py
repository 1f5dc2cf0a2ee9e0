"""benchmark data: the suite runs ours beside the reference in one run and writes its table as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from target_ssl.bench_images import ensure_bench_images
from target_ssl.benchmark import main


def test_bench_images_are_photo_sized_jpegs_with_annotations(tmp_path: Path) -> None:
    folder = ensure_bench_images(160, 120, 3, tmp_path)
    files = sorted((folder / "images").glob("*.jpg"))
    assert len(files) == 3 and Image.open(files[0]).size == (160, 120)
    assert files[0].stat().st_size > 160 * 120 * 3 / 40  # photo-like entropy, not a flat image
    assert not np.array_equal(np.asarray(Image.open(files[0])), np.asarray(Image.open(files[1])))
    coco = json.loads((folder / "instances.json").read_text())
    assert len(coco["images"]) == len(coco["annotations"]) == 3
    assert len(list((folder / "ade" / "annotations" / "training").glob("*.png"))) == 3


def test_data_suite_reports_ours_against_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    main(["data", "--images", "3", "--rounds", "2", "--sizes", "96x64", "--crop", "32", "--cache", str(tmp_path),
          "--pipelines", "reference", "mae", "det", "--out", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    by_name = {r["pipeline"]: r for r in rows}
    assert set(by_name) == {"reference", "mae", "det"}
    assert by_name["reference"]["vs_ref"] == 1.0 and by_name["det"]["vs_ref"] is None
    mae = by_name["mae"]
    assert mae["min"] <= mae["img/s"] <= mae["max"] and mae["vs_ref_min"] <= mae["vs_ref"] <= mae["vs_ref_max"]
