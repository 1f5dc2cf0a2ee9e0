"""Mask R-CNN + ViT-B on LVIS v1 from random initialisation, 6x schedule (the baseline for the
pretrained LVIS configs).

Paper reference: none (COCO only; random init ViT-B on COCO 6x: 43.0 box / 38.8 mask AP, Table 4).
"""

import dataclasses

from det_configs.lvis_mask_rcnn_splitmask_vitb_3x import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, weights=None),
    solver=dataclasses.replace(base.solver, epochs=72, milestones=(64, 69)),
    run=dataclasses.replace(base.run, output_dir="runs/lvis_random_init_vitb_6x"),
)
