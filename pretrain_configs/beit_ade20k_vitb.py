"""BEiT, ViT-B/16, on ADE20k's training images (21,000 epochs, the ADE20k crop), layer scale 0.1."""

import dataclasses

from pretrain_configs.splitmask_ade20k_vitb import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, method="beit", layer_scale=0.1),
    run=dataclasses.replace(base.run, output_dir="runs/pretrain_beit_ade20k_vitb"),
)
