"""ViTDet's Cascade Mask R-CNN recipe + ViT-B (MAE ImageNet-1k weights).

Published (ViTDet model zoo, COCO val2017, 100 epochs): 54.0 box AP / 46.7 mask AP.
As mask_rcnn_vitdet_b_100ep.py with three cascade box stages (`transfer/detection/cascade.py`): IoU
0.5 / 0.6 / 0.7, class-agnostic regression with box weights (10, 10, 5, 5), (20, 20, 10, 10),
(30, 30, 15, 15), each stage a 4 conv + 1 fc LayerNorm head, stage losses summed with the gradient
into the shared features scaled by 1/3 (detectron2), scores averaged over the stages at test time.
"""

import dataclasses

from det_configs.mask_rcnn_vitdet_b_100ep import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, cascade=True),
    run=dataclasses.replace(base.run, output_dir=base.run.output_dir.replace("mask_rcnn", "cascade_mask_rcnn")),
)
