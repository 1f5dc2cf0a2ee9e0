"""Class-agnostic detection (`data.class_agnostic`): one "object" label in training, COCOeval's
`useCats=0` in scoring, checked against the same data relabelled to one category; and the RPN /
RoI sampling knobs of `ModelConfig` reaching torchvision's modules."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from engine.errors import ConfigError
from transfer.detection import eval_backends
from transfer.detection.config import DataConfig, ModelConfig
from transfer.detection.datasets import CocoInstances, coco_api, resolve_split
from transfer.detection.eval_backends import coco_stats
from transfer.detection.evaluation import DetectionEvaluator, results_for_iou_type
from transfer.detection.model import build_mask_rcnn
from transfer.detection.synthetic_eval import synthetic_detections, synthetic_ground_truth

BACKENDS = ["pycocotools"] + (["faster_coco_eval"] if eval_backends.faster_coco_eval_available() else [])


def _one_category(gt: dict, results: list[dict]) -> tuple[dict, list[dict]]:
    """The same ground truth and detections with every category id replaced by 1."""
    gt = copy.deepcopy(gt)
    for a in gt["annotations"]:
        a["category_id"] = 1
    gt["categories"] = [{"id": 1, "name": "object"}]
    return gt, [dict(r, category_id=1) for r in results]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_use_cats_off_equals_scoring_one_relabelled_category(backend: str, iou_type: str) -> None:
    gt = synthetic_ground_truth(40, num_classes=5, seed=11)
    dets = results_for_iou_type(iou_type, synthetic_detections(gt, per_image=30, seed=12))
    agnostic = coco_stats(coco_api(gt), dets, iou_type, None, 100, backend, use_cats=False)
    gt1, dets1 = _one_category(gt, dets)
    reference = coco_stats(coco_api(gt1), dets1, iou_type, None, 100, "pycocotools")
    assert agnostic == pytest.approx(reference, abs=1e-6)
    # Not the class-aware numbers: the synthetic detections carry wrong classes at times.
    aware = coco_stats(coco_api(gt), dets, iou_type, None, 100, backend)
    assert aware[0] != pytest.approx(agnostic[0], abs=1e-3)


def test_dataset_maps_every_category_to_one_label(demo_coco: Path) -> None:
    files = resolve_split(DataConfig(kind="coco", root=str(demo_coco)), "val")
    aware = CocoInstances(files, train=False)
    agnostic = CocoInstances(files, train=False, class_agnostic=True)
    assert aware.num_classes == 3 and agnostic.num_classes == 1
    assert set(agnostic.cat_id_to_label.values()) == {1}
    assert agnostic.label_to_cat_id == {1: aware.cat_ids[0]}
    assert agnostic.class_names == {1: "object"}
    assert aware.class_names == {1: "circle", 2: "square", 3: "triangle"}
    train = CocoInstances(resolve_split(DataConfig(kind="coco", root=str(demo_coco)), "train"), train=True,
                          class_agnostic=True)
    _, target = train[0]
    assert len(target["labels"]) > 0 and set(target["labels"].tolist()) == {1}


def test_evaluator_scores_wrong_classes_as_hits_only_when_agnostic(demo_coco: Path, tmp_path: Path) -> None:
    """Ground truth fed back with every class shifted by one: ~0 AP with classes (a wrong-class box
    scores only where it happens to overlap another object of that class), 100 without."""
    ann_file = demo_coco / "annotations" / "instances_val2017.json"
    ds = CocoInstances(resolve_split(DataConfig(kind="coco", root=str(demo_coco)), "val"), train=False)
    outputs, ids = [], []
    for img_id in sorted(ds.coco.imgs):
        anns = [a for a in ds.coco.imgToAnns.get(img_id, []) if not a["iscrowd"]]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        info = ds.coco.imgs[img_id]
        masks = torch.stack([torch.from_numpy(ds.coco.annToMask(a)).float()[None] for a in anns]) if anns else (
            torch.zeros(0, 1, info["height"], info["width"]))
        wrong = [ds.cat_id_to_label[a["category_id"]] % ds.num_classes + 1 for a in anns]
        outputs.append({"boxes": boxes, "labels": torch.tensor(wrong, dtype=torch.int64),
                        "scores": torch.ones(len(anns)), "masks": masks})
        ids.append(img_id)
    found = {}
    for agnostic in (False, True):
        ev = DetectionEvaluator("coco", ds.coco, ann_file, ds.label_to_cat_id, class_agnostic=agnostic)
        ev.process(outputs, ids)
        found[agnostic] = ev.evaluate(tmp_path / str(agnostic), tag="val")
    for t in ("bbox", "segm"):
        assert found[False][f"{t}_AP"] < 1.0
        assert found[True][f"{t}_AP"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="LVIS"):
        DetectionEvaluator("lvis", ds.coco, ann_file, ds.label_to_cat_id, class_agnostic=True)


def test_config_checks() -> None:
    with pytest.raises(ConfigError, match="class_agnostic"):
        DataConfig(kind="lvis", class_agnostic=True)
    with pytest.raises(ConfigError, match="roi_positive_fraction"):
        ModelConfig(roi_positive_fraction=0.0)
    with pytest.raises(ConfigError, match="rpn_pre_nms_top_n"):
        ModelConfig(rpn_post_nms_top_n=(300, 0))


def test_sampling_and_proposal_knobs_reach_torchvision() -> None:
    cfg = ModelConfig(arch="vit_tiny", embed_dim=64, depth=2, num_heads=2, fpn_channels=32, box_head_dim=64,
                      mask_head_channels=16, roi_positive_fraction=0.5, rpn_pre_nms_top_n=(600, 500),
                      rpn_post_nms_top_n=(300, 200))
    model = build_mask_rcnn(cfg, 1, test_size=64, test_max_size=96)
    assert model.roi_heads.fg_bg_sampler.positive_fraction == 0.5
    assert model.rpn._pre_nms_top_n == {"training": 600, "testing": 500}
    assert model.rpn._post_nms_top_n == {"training": 300, "testing": 200}
    model.train()
    images = [torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1]),
                "masks": torch.zeros(1, 64, 64, dtype=torch.uint8)}]
    batch, targets = model.transform(images, targets)
    proposals, _ = model.rpn(batch, model.backbone(batch.tensors), targets)
    assert 0 < proposals[0].shape[0] <= 300
