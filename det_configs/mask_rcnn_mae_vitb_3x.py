"""Mask R-CNN + ViT-B on COCO, encoder pretrained with MAE (on COCO, or the official ImageNet
`mae_pretrain_vit_base.pth`).

Paper reference: none in the SplitMask paper (ViT-B there: SplitMask 46.8 / 42.1, BEiT on COCO
46.7 / 41.8, Table 4). For MAE with ViTDet's recipe see mask_rcnn_mae_vitb_lsj_100ep.py. Recipe as
mask_rcnn_splitmask_vits_3x.py.
"""

import dataclasses
import os

from det_configs.mask_rcnn_splitmask_vitb_3x import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(
        base.model,
        weights=os.environ.get("TARGET_SSL_DET_WEIGHTS", "runs/pretrain_mae_vit_base_coco/encoder.safetensors"),
    ),
    run=dataclasses.replace(base.run, output_dir="runs/det_mae_vitb_3x"),
)
