"""DomainNet Painting: fine-tune a ViT-S pretrained on DomainNet Painting's own training images (Table 9 recipe).

The paper's SplitMask encoder pretrained on the target data reaches 69.2 top-1 (Table 6). Pass the
encoder with --weights (tools/pretrain.py's encoder.safetensors, or any checkpoint the loader
reads) and the dataset in ImageFolder layout with --data-root. The recipe (transfer.classification.
config.paper_recipe): 300 epochs, batch 1024, AdamW, cosine, wd 0.05, label smoothing 0.1, drop
path 0.1, mixup 0.8, cutmix 1.0, test crop 0.875; the per-dataset values come from DATASETS.
"""

from transfer.classification.config import paper_recipe

config = paper_recipe("painting", "vit_small", weights=None, root="data/domainnet/painting")
