"""Mask R-CNN + ViT-S on COCO, encoder pretrained with MAE (on COCO with our tools, or an official
MAE checkpoint).

Paper reference: none; the SplitMask paper has no MAE row (its closest ViT-S numbers are BEiT on
COCO 44.7 / 40.2 and SplitMask 45.3 / 40.6, Table 4). Recipe as mask_rcnn_splitmask_vits_3x.py.
"""

import dataclasses
import os

from det_configs.mask_rcnn_splitmask_vits_3x import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(
        base.model,
        weights=os.environ.get("TARGET_SSL_DET_WEIGHTS", "runs/pretrain_mae_vit_small_coco/encoder.safetensors"),
    ),
    run=dataclasses.replace(base.run, output_dir="runs/det_mae_vits_3x"),
)
