"""DomainNet Painting: train a ViT-S from random initialisation (Table 6's scratch row: 38.4 top-1).

The Table 9 recipe without encoder weights and without layer decay (it would only slow the
blocks that have nothing to keep).
"""

from transfer.classification.config import paper_recipe

config = paper_recipe("painting", "vit_small", weights=None, root="data/domainnet/painting", random_init=True)
