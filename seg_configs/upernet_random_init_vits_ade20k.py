"""UperNet + ViT-S on ADE20k from random initialisation (no paper number for ViT-S)."""

import dataclasses

from seg_configs.upernet_random_init_vitb_ade20k import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, arch="vit_small", channels=512),
    run=dataclasses.replace(base.run, output_dir="runs/seg_random_init_vits_ade20k"),
)
