"""DINO ViT-S/16 on the 10% ImageNet subset, 3,000 epochs: Table 1's "IMNet 10%" DINO row (73.1).

The paper uses the class-balanced subsets of SimCLR (Chen et al. 2020, its `10percent.txt`: one
ImageNet file name per line), which `data.file_list` reads by file name; download it yourself and
pass its path with --data-list (nothing downloads at run time). 3,000 epochs keep the number of
updates of 300 full-ImageNet epochs; the prototypes stay frozen for 10 epochs (= 1 ImageNet epoch).
Otherwise as dino_vits_imagenet_full.py.
"""

import dataclasses

from pretrain.config import default_config

_cfg = default_config("dino", "folder")
config = dataclasses.replace(
    _cfg,
    data=dataclasses.replace(_cfg.data, file_list="10percent.txt"),
    model=dataclasses.replace(_cfg.model, arch="vit_small", drop_path=0.1),
    dino=dataclasses.replace(_cfg.dino, freeze_last_layer_epochs=10),
    schedule=dataclasses.replace(_cfg.schedule, epochs=3000, batch_size=64),
    run=dataclasses.replace(_cfg.run, output_dir="runs/dino_vits_imagenet_10pct"),
)
