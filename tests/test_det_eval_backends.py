"""faster-coco-eval against the reference (pycocotools / lvis): every statistic equal to 1e-4 on a
synthetic set with small, medium and large objects, crowds, polygons and RLE, and on the demo split;
backend selection and its errors. The equality tests skip when faster-coco-eval is not installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ConfigError
from transfer.detection import eval_backends
from transfer.detection.config import EvalConfig
from transfer.detection.datasets import coco_api, load_coco_json
from transfer.detection.eval_backends import (
    LVIS_STATS,
    coco_stats,
    load_ground_truth,
    lvis_stats,
    resolve_backend,
)
from transfer.detection.evaluation import results_for_iou_type
from transfer.detection.synthetic_eval import synthetic_detections, synthetic_ground_truth

needs_faster = pytest.mark.skipif(not eval_backends.faster_coco_eval_available(),
                                  reason="faster-coco-eval is not installed")


@pytest.fixture(scope="module")
def synthetic_coco() -> tuple[dict, list[dict]]:
    gt = synthetic_ground_truth(150, num_classes=20, seed=3)
    return gt, synthetic_detections(gt, per_image=100, seed=4)


def _assert_same_coco_stats(gt: dict, results: list[dict], max_dets: int = 100,
                            img_ids: list[int] | None = None) -> list[list[float]]:
    coco = coco_api(gt)
    found = []
    for iou_type in ("bbox", "segm"):
        dets = results_for_iou_type(iou_type, results)
        ref = coco_stats(coco, dets, iou_type, img_ids, max_dets, "pycocotools")
        fast = coco_stats(coco, dets, iou_type, img_ids, max_dets, "faster_coco_eval")
        assert len(ref) == len(fast) == 12
        np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-4, err_msg=iou_type)
        found.append(ref)
    return found


def test_pycocotools_ap_at_other_max_dets(synthetic_coco) -> None:
    # At most 100 detections per image: a cap of 300 keeps them all, so every AP equals the
    # cap-100 one (pycocotools alone would give AP = -1 for maxDets[-1] != 100).
    gt, results = synthetic_coco
    coco, dets = coco_api(gt), results_for_iou_type("bbox", results)
    at_100 = coco_stats(coco, dets, "bbox", None, 100, "pycocotools")
    at_300 = coco_stats(coco, dets, "bbox", None, 300, "pycocotools")
    np.testing.assert_allclose(at_300[:6], at_100[:6], rtol=0, atol=1e-12)
    assert at_300[0] > 0


def test_synthetic_set_is_not_trivial(synthetic_coco) -> None:
    gt, dets = synthetic_coco
    areas = np.array([a["area"] for a in gt["annotations"]])
    # Every COCO size group is populated, crowds and both mask encodings occur.
    assert (areas < 32**2).any() and ((areas >= 32**2) & (areas < 96**2)).any() and (areas >= 96**2).any()
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert {type(a["segmentation"]) for a in gt["annotations"]} == {list, dict}
    assert len(dets) == 100 * len(gt["images"])


@pytest.mark.slow
@needs_faster
def test_faster_equals_pycocotools_on_synthetic_set(synthetic_coco) -> None:
    for stats in _assert_same_coco_stats(*synthetic_coco):
        # AP neither 0 nor 1 and no group empty: the comparison covers real precision-recall curves.
        assert all(0.01 < s < 0.99 for s in stats)


@needs_faster
def test_faster_equals_pycocotools_on_demo(demo_coco: Path) -> None:
    gt = load_coco_json(demo_coco / "annotations" / "instances_val2017.json")
    results = synthetic_detections(gt, per_image=50, seed=5)
    _assert_same_coco_stats(gt, results)
    _assert_same_coco_stats(gt, results, max_dets=20)  # a cap that binds: 50 per image, 20 kept
    # The images one process saw (DetectionEvaluator passes them): a subset of the split.
    subset = sorted(i["id"] for i in gt["images"])[::2]
    _assert_same_coco_stats(gt, [r for r in results if r["image_id"] in set(subset)], img_ids=subset)


@pytest.mark.slow
@needs_faster
def test_faster_lvis_mode_equals_lvis_api(tmp_path: Path) -> None:
    gt = synthetic_ground_truth(80, num_classes=40, lvis=True, seed=6)
    assert {c["frequency"] for c in gt["categories"]} == {"r", "c", "f"}
    gt_file = tmp_path / "lvis.json"
    gt_file.write_text(json.dumps(gt))
    # 320 per image, more than max_dets: both must keep each image's 300 best.
    results = synthetic_detections(gt, per_image=320, seed=7)
    lvis_gt = load_ground_truth("lvis", "pycocotools", gt_file, None)
    for iou_type in ("bbox", "segm"):
        dets = results_for_iou_type(iou_type, results)
        ref = lvis_stats(gt_file, dets, iou_type, None, 300, "pycocotools", lvis_gt=lvis_gt)
        fast = lvis_stats(gt_file, dets, iou_type, None, 300, "faster_coco_eval")
        np.testing.assert_allclose([fast[k] for k in LVIS_STATS], [ref[k] for k in LVIS_STATS], rtol=0, atol=1e-4)
        assert 0.05 < ref["APr"] < 0.95 and 0.05 < ref["APf"] < 0.95


def test_backend_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_backend("pycocotools") == "pycocotools"
    with pytest.raises(ConfigError, match="eval.backend must be one of"):
        resolve_backend("detectron2")
    with pytest.raises(ConfigError, match="eval.backend"):
        EvalConfig(backend="fast")
    monkeypatch.setattr(eval_backends, "faster_coco_eval_available", lambda: False)
    assert resolve_backend("auto") == "pycocotools"  # the automatic fallback
    with pytest.raises(ConfigError, match="pip install faster-coco-eval"):
        resolve_backend("faster_coco_eval")
    monkeypatch.setattr(eval_backends, "faster_coco_eval_available", lambda: True)
    assert resolve_backend("auto") == "faster_coco_eval"
