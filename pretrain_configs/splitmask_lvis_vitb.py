"""SplitMask, ViT-B/16, for LVIS: LVIS v1 uses COCO's train2017 images, so the COCO recipe
(3,000 epochs) on the images that the LVIS training json lists."""

import dataclasses

from pretrain_configs.splitmask_coco_vitb import config as base

config = dataclasses.replace(
    base,
    data=dataclasses.replace(base.data, name="lvis"),
    run=dataclasses.replace(base.run, output_dir="runs/pretrain_splitmask_lvis_vitb"),
)
