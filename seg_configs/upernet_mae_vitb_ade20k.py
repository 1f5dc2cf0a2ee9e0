"""UperNet + ViT-B on ADE20k, encoder pretrained with MAE on ADE20k's images.

No number in the SplitMask paper. MAE (He et al., Table 5) reports 48.1 mIoU for ViT-B pretrained on
ImageNet-1k with the same UperNet pipeline, with a searched lr; mmseg's MAE config uses lr 1e-4 with
layer decay 0.65, which is the starting point here (tune).
"""

import dataclasses

from seg_configs.upernet_splitmask_vitb_ade20k import config as base

config = dataclasses.replace(
    base,
    optim=dataclasses.replace(base.optim, lr=1e-4),
    run=dataclasses.replace(base.run, output_dir="runs/seg_mae_vitb_ade20k"),
)
