"""DINO ViT-S/16 on COCO train2017 (118k images, not object-centric), 3,000 epochs: Table 1's COCO
DINO row (71.9 on iNat-19, -6.5 vs full ImageNet; SplitMask 76.3) and the DINO rows of Table 4.

3,000 epochs (the constant-updates rule, also what `--epochs auto` gives for COCO); the prototypes
stay frozen for 11 epochs (~1 ImageNet epoch of updates). Otherwise as dino_vits_imagenet_full.py.
"""

import dataclasses

from pretrain.config import default_config

_cfg = default_config("dino", "coco")
config = dataclasses.replace(
    _cfg,
    model=dataclasses.replace(_cfg.model, arch="vit_small", drop_path=0.1),
    dino=dataclasses.replace(_cfg.dino, freeze_last_layer_epochs=11),
    schedule=dataclasses.replace(_cfg.schedule, epochs=3000, batch_size=64),
    run=dataclasses.replace(_cfg.run, output_dir="runs/dino_vits_coco"),
)
