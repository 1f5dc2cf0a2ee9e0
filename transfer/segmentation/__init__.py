"""Semantic segmentation transfer: UperNet on a ViT pyramid, ADE20k-layout data, mIoU evaluation."""
