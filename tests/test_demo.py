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


ROWS = ("splitmask", "random_init")


@pytest.mark.slow
def test_tiny_demo_pipeline_end_to_end(tmp_path, capsys):
    demo = load_demo_module()
    summary = demo.main(["--tiny", "--output-dir", str(tmp_path), "--seeds", "3", "--tracks", "det", "seg", "cls"])
    printed = capsys.readouterr().out
    # The demo's own log records every stage, not just its first lines.
    log = (tmp_path / "log.txt").read_text()
    assert "[1/4]" in log and "[3/4] seed 3: UperNet fine-tuning from random_init" in log
    assert "[4/4] seed 3: classifier fine-tuning from random_init" in log and "exported the encoder" in log

    # The table is built from the runs' own metric files, for every initialisation and track.
    for init in ROWS:
        det = json.loads((tmp_path / f"det_{init}" / "final_metrics.json").read_text())
        seg = json.loads((tmp_path / f"seg_{init}" / "final_metrics.json").read_text())
        ft = json.loads((tmp_path / f"cls_finetune_{init}" / "final_metrics.json").read_text())
        lin = json.loads((tmp_path / f"cls_linear_{init}" / "final_metrics.json").read_text())
        row = summary["rows"][init]
        assert row["box AP"] == pytest.approx(det["bbox_AP"]) and row["box AP50"] == pytest.approx(det["bbox_AP50"])
        assert row["mask AP"] == pytest.approx(det["segm_AP"])
        assert row["mIoU"] == pytest.approx(seg["mIoU"])
        assert row["top-1 fine-tuned"] == pytest.approx(ft["top1"]) and row["top-1 linear"] == pytest.approx(lin["top1"])
        assert all(0.0 <= v <= 100.0 for v in row.values())
        assert f"| {init} |" in printed
    # Each pretrained row started from the encoder pretrained on its own target's images; random
    # init from nothing, and (the fair protocol) without layer decay where the pretrained row has it.
    for kind, data, source in (("det", "coco", "demo"), ("seg", "ade", "ade20k")):
        encoder = tmp_path / f"pretrain_{data}" / "encoder.safetensors"
        assert encoder.is_file()
        assert json.loads((tmp_path / f"pretrain_{data}" / "config.json").read_text())["data"]["name"] == source
        cfg = json.loads((tmp_path / f"{kind}_splitmask" / "config.json").read_text())
        assert cfg["model"]["weights"] == str(encoder)
        random_cfg = json.loads((tmp_path / f"{kind}_random_init" / "config.json").read_text())
        assert random_cfg["model"]["weights"] is None and random_cfg["optim"]["layer_decay"] is None
    seg_cfg = json.loads((tmp_path / "seg_splitmask" / "config.json").read_text())
    assert seg_cfg["optim"]["layer_decay"] == 0.65
    cls_cfg = json.loads((tmp_path / "cls_finetune_splitmask" / "config.json").read_text())
    assert cls_cfg["model"]["weights"] == str(tmp_path / "pretrain_cls" / "encoder.safetensors")

    # The probe ran during each pretraining; the table's probe rows are its last records.
    probe = summary["per_seed"][3]["probe"]
    records = [json.loads(x) for x in (tmp_path / "pretrain_ade" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "val/probe/miou/block0" in r][-1]
    assert probe["ade/splitmask"]["probe"] == pytest.approx(last["val/probe/miou/block0"])
    assert probe["ade/splitmask"]["probe_random"] == pytest.approx(last["val/probe_random/miou/block0"])

    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(summary))
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("## Fine-tuning") and "one seed: no verdict" in text
    # The demo's Mask R-CNN is class-agnostic: one label trained, every result under one category id,
    # and the table says so.
    det_cfg = json.loads((tmp_path / "det_random_init" / "config.json").read_text())
    assert det_cfg["data"]["class_agnostic"] is True
    det_results = json.loads((tmp_path / "det_random_init" / "eval" / "final_results.json").read_text())
    assert len({r["category_id"] for r in det_results}) <= 1
    assert "class-agnostic" in text
    names = ["pretrain_loss", "det_loss", "seg_loss", "cls_loss", "splitmask_split", "probe_ade_splitmask"]
    names += [f"{kind}_{init}" for kind in ("detections", "segmentation") for init in ROWS]
    for name in names:
        with Image.open(tmp_path / f"{name}.png") as im:
            assert min(im.size) > 200, name


def test_default_tracks_leave_mask_rcnn_opt_in():
    demo = load_demo_module()
    assert demo.build_parser().parse_args([]).tracks == ["seg", "cls"]
    assert demo.build_parser().parse_args(["--tracks", "det", "seg", "cls"]).tracks == ["det", "seg", "cls"]
