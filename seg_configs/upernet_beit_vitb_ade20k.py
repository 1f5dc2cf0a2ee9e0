"""UperNet + ViT-B on ADE20k, encoder pretrained with BEiT (training-free tokenizer) on ADE20k.

Paper reference (Table 5): BEiT pretrained on ADE20k only, 45.6 mIoU (BEiT on ImageNet: 45.6).
BEiT encoders are trained with layer scale (init 0.1), so the encoder is built with it; the
checkpoint's values replace the init. BEiT encodes positions as a relative position bias: each
block gets its table, resampled from the 14 x 14 pretraining grid to the 32 x 32 crop grid on
BEiT's geometric progression (rel_pos="beit"). Same recipe as upernet_splitmask_vitb_ade20k.py.
"""

import dataclasses

from seg_configs.upernet_splitmask_vitb_ade20k import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, layer_scale=0.1, rel_pos="beit"),
    run=dataclasses.replace(base.run, output_dir="runs/seg_beit_vitb_ade20k"),
)
