"""iNaturalist 2019: train a ViT-B from random initialisation (Table 6's scratch row: 68.1 top-1).

The Table 9 recipe without encoder weights and without layer decay (it would only slow the
blocks that have nothing to keep).
"""

from transfer.classification.config import paper_recipe

config = paper_recipe("inat19", "vit_base", weights=None, root="data/inat19", random_init=True)
