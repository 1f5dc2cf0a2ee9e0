"""DINO ViT-S/16 on full ImageNet, 300 epochs: Table 1's "IMNet Full" DINO row (78.4 on iNat-19).

    torchrun --nproc_per_node 8 tools/pretrain.py --method dino --data folder --data-root $IMNET/train ...
    (or --config pretrain_configs/dino_vits_imagenet_full.py where the tool has --config)

DINO's recipe: 2 x 224 global crops (scale 0.4-1) + 10 x 96 local crops (0.05-0.4), 65,536
prototypes, student / teacher temperature 0.1 / 0.04, centre momentum 0.9, teacher momentum 0.996 -> 1,
weight decay 0.04 -> 0.4, lr 5e-4 x batch / 256 with warm-up (10 of 300 epochs) and cosine decay,
clip 3.0, prototypes frozen during the first epoch. Batch 1024 = 64 per GPU x 16 GPUs (set
schedule.accum_iter=2 on 8 GPUs). The data root is `--data-root` or $TARGET_SSL_FOLDER_ROOT.
"""

import dataclasses

from pretrain.config import default_config

_cfg = default_config("dino", "folder")
config = dataclasses.replace(
    _cfg,
    model=dataclasses.replace(_cfg.model, arch="vit_small", drop_path=0.1),
    schedule=dataclasses.replace(_cfg.schedule, epochs=300, batch_size=64),
    run=dataclasses.replace(_cfg.run, output_dir="runs/dino_vits_imagenet_full"),
)
