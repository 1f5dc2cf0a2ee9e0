"""SplitMask, ViT-S/16, on COCO's train2017 images: the ViT-B recipe at the small size."""

import dataclasses

from pretrain_configs.splitmask_coco_vitb import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, arch="vit_small"),
    run=dataclasses.replace(base.run, output_dir="runs/pretrain_splitmask_coco_vits"),
)
