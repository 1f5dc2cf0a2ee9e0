"""Mask R-CNN + ViT-B on COCO, encoder pretrained with SplitMask on COCO.

Paper reference (Table 4, COCO val2017, 3x): ViT-B SplitMask 46.8 box AP / 42.1 mask AP
(AP50 67.9 / 65.3, AP75 51.5 / 45.1). Recipe as mask_rcnn_splitmask_vits_3x.py (blocks 3, 5, 7, 11
tapped, 768-channel pyramid into the FPN).
"""

import dataclasses
import os

from det_configs.mask_rcnn_splitmask_vits_3x import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(
        base.model,
        arch="vit_base",
        weights=os.environ.get("TARGET_SSL_DET_WEIGHTS", "runs/pretrain_splitmask_vit_base_coco/encoder.safetensors"),
    ),
    run=dataclasses.replace(base.run, output_dir="runs/det_splitmask_vitb_3x"),
)
