"""Mask R-CNN + ViT-B on COCO from random initialisation, 3x schedule.

Paper reference (Table 4, COCO val2017): random init ViT-B 40.7 box AP / 37.1 mask AP (3x);
43.0 / 38.8 with the 6x schedule (mask_rcnn_random_init_vitb_6x.py).
"""

import dataclasses

from det_configs.mask_rcnn_splitmask_vitb_3x import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, weights=None),
    run=dataclasses.replace(base.run, output_dir="runs/det_random_init_vitb_3x"),
)
