"""Food-101: train a ViT-S from random initialisation (Table 6's scratch row: 84.7 top-1).

The Table 9 recipe without encoder weights and without layer decay (it would only slow the
blocks that have nothing to keep).
"""

from transfer.classification.config import paper_recipe

config = paper_recipe("food101", "vit_small", weights=None, root="data/food101", random_init=True)
