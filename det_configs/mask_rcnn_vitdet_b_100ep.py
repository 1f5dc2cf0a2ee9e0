"""ViTDet's Mask R-CNN recipe + ViT-B (MAE ImageNet-1k weights): the reference MAE / MAWS transfer.

Published (ViTDet model zoo, detectron2 projects/ViTDet, COCO val2017, 100 epochs at 64 images per
step): 51.6 box AP / 45.9 mask AP.

ViTDet's backbone and heads on top of mask_rcnn_mae_vitb_lsj_100ep.py (LSJ at 1024, simple feature
pyramid, AdamW wd 0.1, layer decay 0.7, drop path 0.1, 100 epochs with x0.1 at 88.9 / 96.3):
- blocks on patch tokens only (no cls token); window attention over 14 x 14 patches in every block
  but 2, 5, 8, 11 (global), the feature map zero-padded to a multiple of 14;
- decomposed relative position biases in every block, zero-initialised (MAE has none), the global
  blocks' tables made for the 64 x 64 grid at 1024 px;
- RPN with 2 convs, box head 4 conv + 1 fc and mask head 4 convs, LayerNorm after each conv.
Differences left: our fixed sin-cos positions are computed for the 64 x 64 grid where ViTDet
resamples MAE's 14 x 14 table bicubically; 16 images per step here (lr 1e-4 as ViTDet's at 64).
"""

import dataclasses

from det_configs.mask_rcnn_mae_vitb_lsj_100ep import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(
        base.model,
        patch_only=True,
        window_size=14,
        global_blocks=None,  # ViTDet's by depth: 2, 5, 8, 11 for ViT-B
        rel_pos="decomposed",
        rel_pos_grid=64,
        heads="vitdet",
    ),
    run=dataclasses.replace(base.run, output_dir="runs/det_vitdet_mask_rcnn_vitb_100ep"),
)
