"""COCO / LVIS box and mask AP: ground truth fed back scores 100, a hand-computed case, edge cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from transfer.detection.datasets import coco_api, load_coco_json
from transfer.detection.evaluation import (
    DetectionEvaluator,
    coco_evaluate,
    detections_to_results,
    format_metrics_table,
)


def _gt_as_outputs(data: dict) -> dict[int, dict[str, torch.Tensor]]:
    """Every non-crowd annotation of `data` as a detector output (score 1, full-image mask probs)."""
    coco = coco_api(data)
    cat_to_label = {c: i + 1 for i, c in enumerate(sorted(c["id"] for c in data["categories"]))}
    outputs = {}
    for img_id, info in coco.imgs.items():
        anns = [a for a in coco.imgToAnns.get(img_id, []) if not a.get("iscrowd", 0)]
        h, w = info["height"], info["width"]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        masks = torch.zeros(len(anns), 1, h, w)
        for i, a in enumerate(anns):
            masks[i, 0] = torch.from_numpy(coco.annToMask(a)).float()
        outputs[img_id] = {
            "boxes": boxes,
            "labels": torch.tensor([cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "scores": torch.ones(len(anns)),
            "masks": masks,
        }
    return outputs


def _feed_back(evaluator: DetectionEvaluator, outputs: dict[int, dict]) -> None:
    ids = sorted(outputs)
    evaluator.process([outputs[i] for i in ids], ids)


def test_ground_truth_scores_100_on_coco(demo_coco: Path, tmp_path: Path) -> None:
    ann_file = demo_coco / "annotations" / "instances_val2017.json"
    data = load_coco_json(ann_file)
    # The demo split has what makes this non-trivial: crowds, an empty image, polygons and RLE.
    assert any(a["iscrowd"] for a in data["annotations"])
    assert {type(a["segmentation"]) for a in data["annotations"]} == {list, dict}
    coco = coco_api(data)
    cats = sorted(c["id"] for c in data["categories"])
    ev = DetectionEvaluator("coco", coco, ann_file, {i + 1: c for i, c in enumerate(cats)}, max_dets=100)
    _feed_back(ev, _gt_as_outputs(data))
    metrics = ev.evaluate(tmp_path, tag="gt")
    for t in ("bbox", "segm"):
        assert metrics[f"{t}_AP"] == pytest.approx(100.0)
        assert metrics[f"{t}_AP50"] == pytest.approx(100.0)
        assert metrics[f"{t}_AP75"] == pytest.approx(100.0)
    assert metrics["num_images"] == len(data["images"])
    # Written files: COCO results format (loadable by pycocotools) and the metrics json.
    results = json.loads((tmp_path / "gt_results.json").read_text())
    assert {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(results[0])
    coco.loadRes(results)
    saved = json.loads((tmp_path / "gt_metrics.json").read_text())
    assert saved["bbox_AP"] == pytest.approx(100.0)


def _lvis_layout(coco_json: dict) -> dict:
    """An LVIS v1-style json built from a COCO-style one (same images and instances, no crowds)."""
    anns = [dict(a) for a in coco_json["annotations"] if not a["iscrowd"]]
    for a in anns:
        a.pop("iscrowd")
    img_ids = {i["id"] for i in coco_json["images"]}
    per_cat_images: dict[int, set] = {}
    for a in anns:
        per_cat_images.setdefault(a["category_id"], set()).add(a["image_id"])
    cats = []
    for i, c in enumerate(sorted(coco_json["categories"], key=lambda c: c["id"])):
        cats.append({**c, "frequency": "rcf"[i % 3], "image_count": len(per_cat_images.get(c["id"], ())),
                     "instance_count": sum(a["category_id"] == c["id"] for a in anns), "synset": c["name"]})
    images = []
    for img in coco_json["images"]:
        present = {a["category_id"] for a in anns if a["image_id"] == img["id"]}
        absent = sorted({c["id"] for c in cats} - present)
        images.append({**img, "coco_url": f"http://images.cocodataset.org/val2017/{img['file_name']}",
                       "neg_category_ids": absent[:2], "not_exhaustive_category_ids": []})
    assert img_ids == {i["id"] for i in images}
    return {"images": images, "annotations": anns, "categories": cats}


def test_ground_truth_scores_100_on_lvis(demo_coco: Path, tmp_path: Path) -> None:
    coco_json = load_coco_json(demo_coco / "annotations" / "instances_val2017.json")
    lvis_json = _lvis_layout(coco_json)
    ann_file = tmp_path / "lvis_v1_val.json"
    ann_file.write_text(json.dumps(lvis_json))
    cats = sorted(c["id"] for c in lvis_json["categories"])
    ev = DetectionEvaluator("lvis", coco_api(load_coco_json(ann_file)), ann_file,
                            {i + 1: c for i, c in enumerate(cats)}, max_dets=300)
    _feed_back(ev, _gt_as_outputs(lvis_json))
    metrics = ev.evaluate(tmp_path, tag="lvis")
    for t in ("bbox", "segm"):
        for k in ("AP", "AP50", "AP75", "APr", "APc", "APf"):
            assert metrics[f"{t}_{k}"] == pytest.approx(100.0), (t, k)


def _one_image_gt() -> dict:
    return {
        "images": [{"id": 1, "height": 400, "width": 400, "file_name": "a.jpg"}],
        "categories": [{"id": 3, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [200, 200, 100, 100], "area": 10000, "iscrowd": 0},
        ],
    }


def test_hand_computed_ap() -> None:
    # Two ground-truth boxes (100 x 100) and three detections, by score:
    #   d1 (0.9): [0, 0, 100, 92]     IoU 0.92 with GT1
    #   d2 (0.8): [300, 0, 100, 100]  IoU 0 with both (false positive)
    #   d3 (0.7): [200, 200, 100, 62] IoU 0.62 with GT2
    # IoU thresholds 0.50 .. 0.95 (step 0.05); a match needs IoU >= threshold.
    # t in {0.50, 0.55, 0.60}: d1 TP, d2 FP, d3 TP -> (recall, precision) = (.5, 1), (.5, .5), (1, 2/3);
    #   interpolated precision (max to the right): 1 for recall <= .5, 2/3 above. Of the 101 recall
    #   points 0, .01, ..., 1: 51 (0 .. .50) get 1 and 50 (.51 .. 1) get 2/3 -> AP = (51 + 100/3) / 101 = 253/303.
    # t in {0.65, ..., 0.90} (6 thresholds): only d1 matches -> recall tops at .5: AP = 51/101.
    # t = 0.95: nothing matches -> 0.
    # AP = (3 * 253/303 + 6 * 51/101 + 0) / 10 = 559/1010.
    gt = coco_api(_one_image_gt())
    dets = [
        {"image_id": 1, "category_id": 3, "bbox": [0, 0, 100, 92], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [300, 0, 100, 100], "score": 0.8},
        {"image_id": 1, "category_id": 3, "bbox": [200, 200, 100, 62], "score": 0.7},
    ]
    m = coco_evaluate(gt, dets, iou_types=("bbox",))
    assert m["bbox_AP50"] == pytest.approx(100 * 253 / 303)
    assert m["bbox_AP75"] == pytest.approx(100 * 51 / 101)
    assert m["bbox_AP"] == pytest.approx(100 * 559 / 1010)
    # Both objects are large (area > 96^2): no small / medium ground truth -> NaN, not 0.
    assert m["bbox_APl"] == pytest.approx(m["bbox_AP"])
    assert math.isnan(m["bbox_APs"]) and math.isnan(m["bbox_APm"])
    assert "-" in format_metrics_table(m)


def test_no_detections_give_zero() -> None:
    m = coco_evaluate(coco_api(_one_image_gt()), [], iou_types=("bbox", "segm"))
    assert m["bbox_AP"] == 0.0 and m["segm_AP"] == 0.0


def test_detections_to_results_rle_and_boxes() -> None:
    masks = torch.zeros(2, 1, 20, 30)
    masks[0, 0, 2:8, 3:10] = 0.9
    masks[1, 0, 10:20, 0:5] = 0.4  # below the 0.5 threshold: empty mask
    out = {"boxes": torch.tensor([[3.0, 2.0, 10.0, 8.0], [0.0, 10.0, 5.0, 20.0]]),
           "scores": torch.tensor([0.8, 0.3]), "labels": torch.tensor([1, 2]), "masks": masks}
    res = detections_to_results(out, image_id=7, label_to_cat_id={1: 11, 2: 22})
    assert [r["category_id"] for r in res] == [11, 22]
    assert res[0]["bbox"] == [3.0, 2.0, 7.0, 6.0]  # xyxy -> xywh
    json.dumps(res)  # RLE counts are strings
    decoded = mask_utils.decode([{**r["segmentation"], "counts": r["segmentation"]["counts"].encode()} for r in res])
    assert decoded.shape == (20, 30, 2)
    np.testing.assert_array_equal(decoded[..., 0], (masks[0, 0] > 0.5).numpy())
    assert decoded[..., 1].sum() == 0
