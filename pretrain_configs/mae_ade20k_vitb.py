"""MAE, ViT-B/16, on ADE20k's training images: the MAE recipe with 21,000 epochs and the ADE20k crop."""

import dataclasses

from pretrain_configs.mae_coco_vitb import config as base

config = dataclasses.replace(
    base,
    data=dataclasses.replace(base.data, name="ade20k", augment="ade20k"),
    schedule=dataclasses.replace(base.schedule, epochs=21000),
    run=dataclasses.replace(base.run, output_dir="runs/pretrain_mae_ade20k_vitb"),
)
