"""ViTDet's LVIS v1 Mask R-CNN recipe + ViT-L (MAE ImageNet-1k weights).

Published (ViTDet model zoo, LVIS v1 val, 100 epochs): 46.1 box AP / 43.6 mask AP.
lvis_mask_rcnn_vitdet_b_100ep.py with the ViT-L encoder, drop path and layer decay of
mask_rcnn_vitdet_l_100ep.py (LVIS keeps 100 epochs).
"""

import dataclasses

from det_configs.lvis_mask_rcnn_vitdet_b_100ep import config as base
from det_configs.mask_rcnn_vitdet_l_100ep import config as coco

config = dataclasses.replace(
    base,
    model=dataclasses.replace(
        base.model, arch=coco.model.arch, drop_path=coco.model.drop_path, weights=coco.model.weights
    ),
    optim=dataclasses.replace(base.optim, layer_decay=coco.optim.layer_decay),
    run=dataclasses.replace(base.run, output_dir="runs/lvis_vitdet_mask_rcnn_vitl_100ep"),
)
