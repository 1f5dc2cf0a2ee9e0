"""UperNet + ViT-B on ADE20k, encoder pretrained with BEiT (training-free tokenizer) on ADE20k.

Paper reference (Table 5): BEiT pretrained on ADE20k only, 45.6 mIoU (BEiT on ImageNet: 45.6).
BEiT encoders are trained with layer scale (init 0.1), so the encoder is built with it; the
checkpoint's values replace the init. Same recipe as upernet_splitmask_vitb_ade20k.py.
"""

import dataclasses

from seg_configs.upernet_splitmask_vitb_ade20k import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, layer_scale=0.1),
    run=dataclasses.replace(base.run, output_dir="runs/seg_beit_vitb_ade20k"),
)
