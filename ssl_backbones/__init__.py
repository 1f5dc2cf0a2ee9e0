"""target-ssl backbones: the ViT encoder, position embeddings, multi-scale adapters, checkpoint interop."""

from .adapters import MaxPoolDeconvAdapter, SimpleFeaturePyramid, pad_to_multiple
from .checkpoint import (
    ArchitectureMismatchError,
    CheckpointFormatError,
    LoadReport,
    export_encoder,
    load_encoder_weights,
    load_exported_encoder,
    read_checkpoint,
)
from .pos_embed import resample_pos_embed, sincos_2d_pos_embed
from .vit import ARCHS, VisionTransformer, ViTSpec, create_vit, default_out_indices

__all__ = [
    "ARCHS",
    "ArchitectureMismatchError",
    "CheckpointFormatError",
    "LoadReport",
    "MaxPoolDeconvAdapter",
    "SimpleFeaturePyramid",
    "ViTSpec",
    "VisionTransformer",
    "create_vit",
    "default_out_indices",
    "export_encoder",
    "load_encoder_weights",
    "load_exported_encoder",
    "pad_to_multiple",
    "read_checkpoint",
    "resample_pos_embed",
    "sincos_2d_pos_embed",
]
