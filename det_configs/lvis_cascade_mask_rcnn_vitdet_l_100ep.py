"""ViTDet's LVIS v1 Cascade Mask R-CNN recipe + ViT-L (MAE ImageNet-1k weights).

Published (ViTDet model zoo, LVIS v1 val, 100 epochs): 49.2 box AP / 44.5 mask AP.
lvis_mask_rcnn_vitdet_l_100ep.py with the three cascade stages of cascade_mask_rcnn_vitdet_b_100ep.py,
each with the federated sigmoid loss; scores are the stages' mean sigmoid.
"""

import dataclasses

from det_configs.lvis_mask_rcnn_vitdet_l_100ep import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, cascade=True),
    run=dataclasses.replace(base.run, output_dir=base.run.output_dir.replace("mask_rcnn", "cascade_mask_rcnn")),
)
