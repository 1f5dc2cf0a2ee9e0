"""Mask R-CNN + ViT-S on COCO from random initialisation (no pretraining), 3x schedule.

Paper reference (Table 4, COCO val2017): random init ViT-S 38.3 box AP / 35.6 mask AP (3x);
42.8 / 39.1 with the 6x schedule (mask_rcnn_random_init_vits_6x.py). Recipe as
mask_rcnn_splitmask_vits_3x.py with model.weights=None.
"""

import dataclasses

from det_configs.mask_rcnn_splitmask_vits_3x import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, weights=None),
    run=dataclasses.replace(base.run, output_dir="runs/det_random_init_vits_3x"),
)
