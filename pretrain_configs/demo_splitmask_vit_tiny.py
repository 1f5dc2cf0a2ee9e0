"""SplitMask, ViT-tiny, on the built-in demo COCO-layout images: what `tools/demo.py` pretrains.

128 px images, 16 per batch, a larger base lr (4e-3) so the loss visibly falls in few epochs, two
loader workers, a log line per update; 20 epochs (about a minute on a 2-core CPU). The demo set is
generated when the dataset is first built, not when this file loads.
"""

import dataclasses

from pretrain.config import default_config

base = default_config("splitmask", "demo")
config = dataclasses.replace(
    base,
    model=dataclasses.replace(base.model, arch="vit_tiny"),
    schedule=dataclasses.replace(base.schedule, epochs=20),
    run=dataclasses.replace(base.run, output_dir="runs/pretrain_demo_splitmask_vit_tiny"),
)
