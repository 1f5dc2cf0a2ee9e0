"""ViTDet's Mask R-CNN recipe + ViT-H (MAE ImageNet-1k weights, patch 14 resampled to 16 as ViTDet does).

Published (ViTDet model zoo, COCO val2017, 75 epochs): 56.7 box AP / 50.2 mask AP.
As mask_rcnn_vitdet_b_100ep.py with ViT-H: global blocks 7, 15, 23, 31, drop path 0.5, layer decay
0.9, 75 epochs (ViTDet's 100-epoch milestones x 3/4: epochs 66.7 and 72.2).
"""

import dataclasses
import os

from det_configs.mask_rcnn_vitdet_b_100ep import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(
        base.model,
        arch="vit_huge",
        drop_path=0.5,
        weights=os.environ.get("TARGET_SSL_DET_WEIGHTS", "weights/mae_pretrain_vit_huge_p14to16.pth"),
    ),
    optim=dataclasses.replace(base.optim, layer_decay=0.9),
    solver=dataclasses.replace(base.solver, epochs=75, milestones=(67, 72)),
    run=dataclasses.replace(base.run, output_dir="runs/det_vitdet_mask_rcnn_vith_75ep"),
)
