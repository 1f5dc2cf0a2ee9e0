"""SplitMask, ViT-B/16, on ADE20k's own training images: 21,000 epochs (constant updates, Table 3)
and the ADE20k crop (random resized crop of at most 25% of the image, "a crucial implementation
detail"). `--data-root` points at ADEChallengeData2016 (or $TARGET_SSL_ADE20K_ROOT)."""

import dataclasses

from pretrain_configs.splitmask_coco_vitb import config as base

config = dataclasses.replace(
    base,
    data=dataclasses.replace(base.data, name="ade20k", augment="ade20k"),
    schedule=dataclasses.replace(base.schedule, epochs=21000),
    run=dataclasses.replace(base.run, output_dir="runs/pretrain_splitmask_ade20k_vitb"),
)
