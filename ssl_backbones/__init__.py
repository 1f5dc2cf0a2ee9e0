"""target-ssl backbones: the ViT encoder, position embeddings, multi-scale adapters, checkpoint interop.

Checkpoint interop, one concern per module: `weights_io` (read any supported container),
`weight_convert` (sniff the source, one `_convert_<source>` each), `weight_report` (what the weights
are, the load report, the mismatch refusal), `weight_loading` (`load_encoder_weights`), `export`
(safetensors + json that timm loads strictly).
"""

from .adapters import MaxPoolDeconvAdapter, SimpleFeaturePyramid, pad_to_multiple
from .export import export_encoder, load_exported_encoder
from .pos_embed import resample_pos_embed, sincos_2d_pos_embed
from .vit import ARCHS, VisionTransformer, ViTSpec, create_vit, default_out_indices
from .weight_loading import load_encoder_weights
from .weight_report import ArchitectureMismatchError, LoadReport
from .weights_io import CheckpointFormatError, read_checkpoint

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
