"""ViTDet's Mask R-CNN recipe + ViT-L (MAE ImageNet-1k weights).

Published (ViTDet model zoo, COCO val2017, 100 epochs): 55.5 box AP / 49.2 mask AP.
As mask_rcnn_vitdet_b_100ep.py with ViT-L: global blocks 5, 11, 17, 23, drop path 0.4, layer decay 0.8.
"""

import dataclasses
import os

from det_configs.mask_rcnn_vitdet_b_100ep import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(
        base.model,
        arch="vit_large",
        drop_path=0.4,
        weights=os.environ.get("TARGET_SSL_DET_WEIGHTS", "weights/mae_pretrain_vit_large.pth"),
    ),
    optim=dataclasses.replace(base.optim, layer_decay=0.8),
    run=dataclasses.replace(base.run, output_dir="runs/det_vitdet_mask_rcnn_vitl_100ep"),
)
