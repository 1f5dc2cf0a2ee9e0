"""Export of a trained encoder as `<name>.safetensors` + `<name>.json`, and loading such an export.

The weights use timm's names and layout, so they load into
`timm.create_model(meta["timm_model"], pretrained=False, **meta["timm_kwargs"])` with strict=True.
Both files are written with the tree's one atomic writer, :func:`engine.checkpoint.atomic_write`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save as safetensors_bytes

from engine.checkpoint import atomic_write

from .vit import ARCHS, VisionTransformer
from .weight_loading import load_encoder_weights
from .weight_report import ArchGuess
from .weights_io import read_side_json

__all__ = ["FORMAT_VERSION", "export_encoder", "load_exported_encoder", "timm_model_name"]

FORMAT_VERSION = 1


def _export_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")



def timm_model_name(arch: str | None, patch_size: int) -> str:
    """A registered timm ViT name for this size (e.g. vit_small_patch16_224); custom sizes use
    vit_base's name, with the real sizes passed as create_model overrides (see `timm_kwargs`)."""
    from timm.models import is_model

    size = arch.removeprefix("vit_") if arch in ARCHS else "base"
    for p in (patch_size, 16, 14):
        if is_model(name := f"vit_{size}_patch{p}_224"):
            return name
    return "vit_base_patch16_224"


def export_encoder(encoder: VisionTransformer, path: str | os.PathLike, meta: dict) -> Path:
    """Write `<path>.safetensors` (the encoder's weights) and `<path>.json` (its metadata).

    The weights use timm's names and layout (a sin-cos table is written as a `pos_embed` with a zero
    cls slot, which is what timm adds to its cls token), so
    `timm.create_model(j["timm_model"], pretrained=False, **j["timm_kwargs"]).load_state_dict(w)`
    works with strict=True and computes the same features at `j["img_size"]`.

    Args:
        encoder: the trained encoder.
        path: output stem (`run/encoder` -> `run/encoder.safetensors` + `run/encoder.json`).
        meta: pretraining facts to record ("method", "dataset", "epochs", "arch", ...). Values that
            describe the encoder (embed_dim, depth, ...) must agree with it.
    Returns:
        the `.safetensors` path.
    """
    weights_path, json_path = _export_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    gh, gw = encoder.grid_size
    p = encoder.patch_size
    img_size: int | list[int] = gh * p if gh == gw else [gh * p, gw * p]
    arch = ArchGuess(encoder.embed_dim, encoder.depth, p, encoder.num_heads).name
    blk = encoder.blocks[0]
    layer_scale = hasattr(blk.ls1, "gamma")
    derived = {
        "arch": arch or "custom",
        "patch_size": p,
        "pos_embed": encoder.pos_embed_kind,
        "img_size": img_size,
        "embed_dim": encoder.embed_dim,
        "depth": encoder.depth,
        "num_heads": encoder.num_heads,
        "mlp_ratio": blk.mlp.fc1.out_features / encoder.embed_dim,
        "qkv_bias": blk.attn.qkv.bias is not None,
        "layer_scale": layer_scale,
    }
    for k, v in derived.items():
        if k in meta and meta[k] is not None and meta[k] != v and not (k == "arch" and arch is None):
            raise ValueError(f"export_encoder: meta[{k!r}]={meta[k]!r} disagrees with the encoder ({v!r})")
    full = {"format_version": FORMAT_VERSION, **meta, **derived}
    full["timm_model"] = timm_model_name(arch, p)
    full["timm_kwargs"] = {
        "num_classes": 0,
        "img_size": img_size,
        "patch_size": p,
        "embed_dim": encoder.embed_dim,
        "depth": encoder.depth,
        "num_heads": encoder.num_heads,
        "mlp_ratio": derived["mlp_ratio"],
        "qkv_bias": derived["qkv_bias"],
        # timm only creates ls*.gamma when init_values is set; the loaded values replace it.
        "init_values": 1.0 if layer_scale else None,
    }
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in encoder.state_dict().items()}
    atomic_write(weights_path, lambda f: f.write(safetensors_bytes(tensors, metadata={"format": "pt"})))
    atomic_write(json_path, lambda f: f.write((json.dumps(full, indent=2, sort_keys=True) + "\n").encode()))
    return weights_path


def load_exported_encoder(path: str | os.PathLike, **overrides) -> VisionTransformer:
    """Build the encoder described by `<path>.json` and load `<path>.safetensors` into it.

    `overrides` go to `VisionTransformer` (e.g. drop_path_rate=0.1, img_size=512, grad_checkpointing).
    """
    weights_path, json_path = _export_paths(path)
    if not json_path.is_file():
        raise FileNotFoundError(
            f"{json_path} (metadata of {weights_path.name}) does not exist; exports are written as a "
            ".safetensors + .json pair by export_encoder"
        )
    meta = read_side_json(weights_path)
    assert meta is not None
    kwargs = {
        "img_size": meta["img_size"] if isinstance(meta["img_size"], int) else tuple(meta["img_size"]),
        "patch_size": meta["patch_size"],
        "embed_dim": meta["embed_dim"],
        "depth": meta["depth"],
        "num_heads": meta["num_heads"],
        "mlp_ratio": meta.get("mlp_ratio", 4.0),
        "qkv_bias": meta.get("qkv_bias", True),
        "pos_embed": meta["pos_embed"],
        "init_values": meta.get("init_values", 1.0) if meta.get("layer_scale") else None,
    }
    kwargs.update(overrides)
    encoder = VisionTransformer(**kwargs)
    load_encoder_weights(encoder, weights_path, strict=True)
    return encoder
