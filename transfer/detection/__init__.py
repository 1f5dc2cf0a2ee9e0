"""Mask R-CNN transfer (COCO, LVIS, custom COCO-format data) with a ViT pyramid backbone."""
