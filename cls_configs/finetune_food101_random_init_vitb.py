"""Food-101: train a ViT-B from random initialisation (Table 6's scratch row: 83.3 top-1).

The Table 9 recipe without encoder weights and without layer decay (it would only slow the
blocks that have nothing to keep).
"""

from transfer.classification.config import paper_recipe

config = paper_recipe("food101", "vit_base", weights=None, root="data/food101", random_init=True)
