"""UperNet + ViT-S on ADE20k, encoder pretrained with SplitMask on ADE20k's images.

The paper reports ADE20k only for ViT-B (45.7 mIoU, see upernet_splitmask_vitb_ade20k.py). For ViT-S
the head width follows mmseg's ViT-S / DeiT-S UperNet configs (512 channels); everything else is
the ViT-B recipe.
"""

import dataclasses

from seg_configs.upernet_splitmask_vitb_ade20k import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, arch="vit_small", channels=512),
    run=dataclasses.replace(base.run, output_dir="runs/seg_splitmask_vits_ade20k"),
)
