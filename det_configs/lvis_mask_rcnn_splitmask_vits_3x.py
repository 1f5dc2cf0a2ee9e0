"""Mask R-CNN + ViT-S on LVIS v1, encoder pretrained with SplitMask.

Paper reference: none (COCO only; this setting on COCO: 45.3 box / 40.6 mask AP, Table 4).
LVIS settings as lvis_mask_rcnn_splitmask_vitb_3x.py.
"""

import dataclasses

from det_configs.mask_rcnn_splitmask_vits_3x import config as base

config = dataclasses.replace(
    base,
    data=dataclasses.replace(base.data, kind="lvis", repeat_factor_threshold=0.001),
    eval=dataclasses.replace(base.eval, detections_per_image=300, score_threshold=0.02),
    run=dataclasses.replace(base.run, output_dir="runs/lvis_splitmask_vits_3x"),
)
