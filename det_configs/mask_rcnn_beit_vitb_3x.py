"""Mask R-CNN + ViT-B on COCO, encoder pretrained with BEiT (random-projection tokenizer) on COCO.

Paper reference (Table 4, COCO val2017, 3x): ViT-B BEiT pretrained on COCO 46.7 box AP / 41.8 mask
AP (BEiT on ImageNet: 46.3 / 41.6). Layer scale 0.1 as in BEiT. Recipe as mask_rcnn_splitmask_vits_3x.py.
"""

import dataclasses
import os

from det_configs.mask_rcnn_beit_vits_3x import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(
        base.model,
        arch="vit_base",
        weights=os.environ.get("TARGET_SSL_DET_WEIGHTS", "runs/pretrain_beit_vit_base_coco/encoder.safetensors"),
    ),
    run=dataclasses.replace(base.run, output_dir="runs/det_beit_vitb_3x"),
)
