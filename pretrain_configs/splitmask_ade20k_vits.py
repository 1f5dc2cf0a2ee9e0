"""SplitMask, ViT-S/16, on ADE20k's training images: the ViT-B ADE20k recipe at the small size."""

import dataclasses

from pretrain_configs.splitmask_ade20k_vitb import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, arch="vit_small"),
    run=dataclasses.replace(base.run, output_dir="runs/pretrain_splitmask_ade20k_vits"),
)
