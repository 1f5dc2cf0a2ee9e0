"""UperNet + ViT-S on ADE20k, encoder pretrained with MAE on ADE20k (no paper number for ViT-S)."""

import dataclasses

from seg_configs.upernet_mae_vitb_ade20k import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, arch="vit_small", channels=512),
    run=dataclasses.replace(base.run, output_dir="runs/seg_mae_vits_ade20k"),
)
