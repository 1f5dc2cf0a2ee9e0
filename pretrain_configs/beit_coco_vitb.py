"""BEiT, ViT-B/16, on COCO's train2017 images: the SplitMask COCO recipe with BEiT's objective
(all patches in, ~40% block-masked: 75 of 196 patches, min block 16) and layer scale 0.1."""

import dataclasses

from pretrain_configs.splitmask_coco_vitb import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, method="beit", layer_scale=0.1),
    run=dataclasses.replace(base.run, output_dir="runs/pretrain_beit_coco_vitb"),
)
