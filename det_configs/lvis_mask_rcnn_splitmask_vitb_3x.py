"""Mask R-CNN + ViT-B on LVIS v1, encoder pretrained with SplitMask on COCO / LVIS images.

Paper reference: none (the SplitMask paper reports COCO only; on COCO this setting gives
46.8 box / 42.1 mask AP, Table 4). LVIS v1 uses the COCO 2017 images with 1203 categories:
repeat-factor sampling (t = 0.001), 300 detections per image with score threshold 0.02, AP / APr /
APc / APf from the LVIS API. Otherwise the COCO 3x recipe.

Data: --data-root /path/to/coco with annotations/lvis_v1_{train,val}.json next to the COCO
annotations and the images in train2017/ and val2017/ (found through each image's coco_url).
"""

import dataclasses

from det_configs.mask_rcnn_splitmask_vitb_3x import config as base

config = dataclasses.replace(
    base,
    data=dataclasses.replace(base.data, kind="lvis", repeat_factor_threshold=0.001),
    eval=dataclasses.replace(base.eval, detections_per_image=300, score_threshold=0.02),
    run=dataclasses.replace(base.run, output_dir="runs/lvis_splitmask_vitb_3x"),
)
