"""ViTDet-style Mask R-CNN + ViT-B: simple feature pyramid, large-scale jitter at 1024, 100 epochs.

Reference (Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection", ViTDet,
Table 3/5): Mask R-CNN, ViT-B initialised from ImageNet-1k MAE, 51.6 box AP / 45.9 mask AP. The
SplitMask paper does not use this recipe; it is here for comparison with MAE-style transfers.
ViTDet also uses windowed attention with 4 global blocks, relative positions, and conv + LN heads
(4conv1fc box head, 2 convs in the RPN); this config keeps our global-attention encoder with
sin-cos positions and torchvision's standard heads, so expect somewhat lower numbers;
mask_rcnn_vitdet_b_100ep.py adds the rest of ViTDet's recipe.

Recipe: LSJ (scale 0.1-2.0 of 1024, fixed 1024 crop, padded), flip; AdamW lr 1e-4 (at 64 images
per step in ViTDet; here 16 per step), wd 0.1, layer decay 0.7, drop path 0.1, 100 epochs with x0.1
at epochs 88.9 and 96.3 (ViTDet's 163,889 / 177,546 of 184,375 iterations), 250-iteration warmup.
Test: longest side 1024.
"""

import dataclasses
import os

from det_configs.mask_rcnn_splitmask_vitb_3x import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(
        base.model,
        adapter="simple_fpn",
        drop_path=0.1,
        weights=os.environ.get("TARGET_SSL_DET_WEIGHTS", "weights/mae_pretrain_vit_base.pth"),
    ),
    data=dataclasses.replace(base.data, policy="lsj", lsj_size=1024, lsj_scale=(0.1, 2.0), test_size=1024, test_max_size=1024),
    optim=dataclasses.replace(base.optim, weight_decay=0.1, layer_decay=0.7, warmup_steps=250),
    solver=dataclasses.replace(base.solver, epochs=100, milestones=(89, 96)),
    eval=dataclasses.replace(base.eval, every_epochs=10),
    run=dataclasses.replace(base.run, output_dir="runs/det_mae_vitb_lsj_100ep"),
)
