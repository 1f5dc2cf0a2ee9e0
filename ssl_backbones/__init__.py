"""target-ssl backbones: the ViT encoder, position embeddings, multi-scale adapters, checkpoint interop."""

from .adapters import MaxPoolDeconvAdapter, SimpleFeaturePyramid, pad_to_multiple
from .pos_embed import resample_pos_embed, sincos_2d_pos_embed
from .vit import ARCHS, VisionTransformer, ViTSpec, create_vit, default_out_indices

__all__ = [
    "ARCHS",
    "MaxPoolDeconvAdapter",
    "SimpleFeaturePyramid",
    "ViTSpec",
    "VisionTransformer",
    "create_vit",
    "default_out_indices",
    "pad_to_multiple",
    "resample_pos_embed",
    "sincos_2d_pos_embed",
]
