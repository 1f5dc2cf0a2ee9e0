"""ViTDet's LVIS v1 Mask R-CNN recipe + ViT-B (MAE ImageNet-1k weights).

Published (ViTDet model zoo, LVIS v1 val, 100 epochs): 40.2 box AP / 38.2 mask AP (LVIS results vary
more than COCO's: ViTDet reports a 0.3 AP standard deviation over seeds).
mask_rcnn_vitdet_b_100ep.py on LVIS: repeat-factor sampling (t = 0.001), 300 detections per image
with score threshold 0.02, and the federated sigmoid cross-entropy for the box classifier (50 classes
per batch including the positives, negatives drawn with weight image_count ** 0.5; detections scored
by per-class sigmoids); lr doubled as in ViTDet's LVIS configs (2e-4 there at 64 images per step).

Data: as lvis_mask_rcnn_splitmask_vitb_3x.py (--data-root /path/to/coco with annotations/lvis_v1_*.json).
"""

import dataclasses

from det_configs.mask_rcnn_vitdet_b_100ep import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, cls_loss="federated", fed_loss_classes=50, fed_loss_power=0.5),
    data=dataclasses.replace(base.data, kind="lvis", repeat_factor_threshold=0.001),
    optim=dataclasses.replace(base.optim, lr=2 * base.optim.lr),
    eval=dataclasses.replace(base.eval, detections_per_image=300, score_threshold=0.02),
    run=dataclasses.replace(base.run, output_dir="runs/lvis_vitdet_mask_rcnn_vitb_100ep"),
)
