"""UperNet + ViT-B on ADE20k from random initialisation (the baseline).

Paper reference (Table 5): random init, 25.4 mIoU. The paper does not give this run's recipe; with
nothing pretrained, layer-wise lr decay is turned off (every block learns at the full lr), the rest
is the self-supervised recipe.
"""

import dataclasses

from seg_configs.upernet_splitmask_vitb_ade20k import config as base

config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, weights=None),
    optim=dataclasses.replace(base.optim, layer_decay=None),
    run=dataclasses.replace(base.run, output_dir="runs/seg_random_init_vitb_ade20k"),
)
