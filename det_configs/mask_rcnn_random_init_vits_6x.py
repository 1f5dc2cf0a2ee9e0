"""Mask R-CNN + ViT-S on COCO from random initialisation, 6x schedule (72 epochs).

Paper reference (Table 4, COCO val2017, marked "6x schedule following He et al."): random init
ViT-S 42.8 box AP / 39.1 mask AP (3x: 38.3 / 35.6). He et al.'s 6x (540k iterations at 16 images)
lowers the lr x0.1 for the last 60k and the last 20k iterations: epochs 64 and 69 of 72.
"""

import dataclasses

from det_configs.mask_rcnn_random_init_vits_3x import config as base

config = dataclasses.replace(
    base,
    solver=dataclasses.replace(base.solver, epochs=72, milestones=(64, 69)),
    run=dataclasses.replace(base.run, output_dir="runs/det_random_init_vits_6x"),
)
