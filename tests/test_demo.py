"""The main job, reduced: `tools/demo.py --tiny` runs every stage and writes the table and pictures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def load_demo_module():
    spec = importlib.util.spec_from_file_location("target_ssl_demo", REPO / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_demo_pipeline_end_to_end(tmp_path, capsys):
    demo = load_demo_module()
    summary = demo.main(["--tiny", "--output-dir", str(tmp_path), "--seed", "3"])
    printed = capsys.readouterr().out
    # The demo's own log records every stage, not just its first lines.
    log = (tmp_path / "log.txt").read_text()
    assert "[1/3]" in log and "[3/3] UperNet fine-tuning from random_init" in log and "exported the encoder" in log

    # The table is built from the runs' own metric files, for both initialisations.
    for init in demo.INITS:
        det = json.loads((tmp_path / f"det_{init}" / "final_metrics.json").read_text())
        seg = json.loads((tmp_path / f"seg_{init}" / "final_metrics.json").read_text())
        row = summary["rows"][init]
        assert row["box AP"] == pytest.approx(det["bbox_AP"])
        assert row["mask AP"] == pytest.approx(det["segm_AP"])
        assert row["mIoU"] == pytest.approx(seg["mIoU"])
        assert all(0.0 <= v <= 100.0 for v in row.values())
        assert f"| {init} |" in printed
    # Each pretrained row started from the encoder pretrained on its own target's images; random
    # init from nothing.
    for kind, data, source in (("det", "coco", "demo"), ("seg", "ade", "ade20k")):
        encoder = tmp_path / f"pretrain_{data}" / "encoder.safetensors"
        assert encoder.is_file()
        assert json.loads((tmp_path / f"pretrain_{data}" / "config.json").read_text())["data"]["name"] == source
        cfg = json.loads((tmp_path / f"{kind}_pretrained" / "config.json").read_text())
        assert cfg["model"]["weights"] == str(encoder)
        assert json.loads((tmp_path / f"{kind}_random_init" / "config.json").read_text())["model"]["weights"] is None

    assert json.loads((tmp_path / "results.json").read_text()) == summary
    assert (tmp_path / "results.md").read_text().startswith("| initialisation | box AP | mask AP | mIoU |")
    names = ["pretrain_loss", "det_loss", "seg_loss", "splitmask_split"]
    names += [f"{kind}_{init}" for kind in ("detections", "segmentation") for init in demo.INITS]
    for name in names:
        with Image.open(tmp_path / f"{name}.png") as im:
            assert min(im.size) > 200, name
