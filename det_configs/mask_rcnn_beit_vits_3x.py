"""Mask R-CNN + ViT-S on COCO, encoder pretrained with BEiT (random-projection tokenizer) on COCO.

Paper reference (Table 4, COCO val2017, 3x): ViT-S BEiT pretrained on COCO 44.7 box AP / 40.2 mask
AP (BEiT on ImageNet: 44.5 / 40.3). BEiT encoders have layer scale (init 0.1), so the encoder is
built with it and the checkpoint's values replace the init. Recipe as mask_rcnn_splitmask_vits_3x.py.
"""

import dataclasses
import os

from det_configs.mask_rcnn_splitmask_vits_3x import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(
        base.model,
        layer_scale=0.1,
        weights=os.environ.get("TARGET_SSL_DET_WEIGHTS", "runs/pretrain_beit_vit_small_coco/encoder.safetensors"),
    ),
    run=dataclasses.replace(base.run, output_dir="runs/det_beit_vits_3x"),
)
