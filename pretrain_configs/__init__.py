"""Pretraining configs: the paper's recipe per method and target (files compose by importing each other).

`splitmask_coco_vitb.py` is the base (BEiT's optimisation recipe, SplitMask's masking); the others
change what differs: the target (ADE20k: 21,000 epochs and the 25% max-scale crop; LVIS: COCO's
images), the size (ViT-S) or the method (BEiT: layer scale 0.1; MAE: its own optimiser settings).
"""
