"""Loading converted weights into our encoder, with the report of what happened to each key.

:func:`load_encoder_weights` reads the file (:mod:`.weights_io`), converts it for its source
(:mod:`.weight_convert`), refuses weights of another architecture with a message naming both
(:mod:`.weight_report`), fills parameters a checkpoint may lack without changing what it computes
(layer scale 1, zero qkv bias), checks shapes key by key, and loads.
"""

from __future__ import annotations

import logging
import os

import torch

from .beit_rel_pos import convert_beit_rel_pos, keeps_beit_rel_pos
from .vit import VisionTransformer
from .weight_convert import convert_pos_embed, convert_to_encoder
from .weight_report import (
    ANCHOR,
    ArchGuess,
    ArchitectureMismatchError,
    LoadReport,
    encoder_arch,
    group_keys,
    infer_arch,
    mismatch,
)
from .weights_io import CheckpointFormatError, read_weights

__all__ = ["load_encoder_weights"]

StateDict = dict[str, torch.Tensor]


def _refuse_other_architecture(path: str, state: StateDict, src: ArchGuess, dst: ArchGuess, model_sd: StateDict) -> None:
    """Raise ArchitectureMismatchError when patch size, width, depth, heads or layer scale differ."""
    if src.patch_size is not None and src.patch_size != dst.patch_size:
        raise mismatch(path, src, dst, f"patch size {src.patch_size} vs {dst.patch_size}")
    if src.embed_dim is not None and src.embed_dim != dst.embed_dim:
        raise mismatch(path, src, dst, f"width {src.embed_dim} vs {dst.embed_dim}")
    if src.depth is not None and src.depth != dst.depth:
        raise mismatch(path, src, dst, f"{src.depth} blocks vs {dst.depth}")
    if src.num_heads is not None and src.num_heads != dst.num_heads:
        raise mismatch(path, src, dst, f"{src.num_heads} heads vs {dst.num_heads}")
    has_ls_ckpt = any(k.endswith("ls1.gamma") for k in state)
    has_ls_model = any(k.endswith("ls1.gamma") for k in model_sd)
    if has_ls_ckpt and not has_ls_model:
        raise mismatch(
            path,
            src,
            dst,
            "the checkpoint uses layer scale (ls1.gamma / BEiT gamma_1) and the model does not; "
            "build the encoder with init_values set (e.g. 0.1)",
        )


def _keep_beit_rel_pos(encoder: VisionTransformer, raw: StateDict, root: str, state: StateDict,
                       report: LoadReport) -> StateDict:
    """A rel_pos="beit" encoder uses BEiT's relative position tables, which the converters drop:
    take them back from the file, resampled to the encoder's grid (`beit_rel_pos`)."""
    if getattr(encoder, "rel_pos", "none") != "beit":
        return state
    for k, v in raw.items():
        if k.startswith(root) and keeps_beit_rel_pos(encoder, k[len(root) :]):
            state[k[len(root) :]] = v
            report.dropped.pop(k, None)
    return convert_beit_rel_pos(state, encoder, report.notes)


def _fill_absent(state: StateDict, model_sd: StateDict, report: LoadReport) -> None:
    """Parameters a checkpoint may lack without changing its function: layer scale 1, qkv bias 0."""
    has_ls_ckpt = any(k.endswith("ls1.gamma") for k in state)
    if any(k.endswith("ls1.gamma") for k in model_sd) and not has_ls_ckpt:
        for k in model_sd:
            if k.endswith(("ls1.gamma", "ls2.gamma")):
                state[k] = torch.ones_like(model_sd[k])
                report.converted[k] = "1 (the checkpoint has no layer scale; gamma=1 computes what it did)"
    if not any(k.endswith("attn.qkv.bias") for k in state) and any(k.endswith("attn.qkv.weight") for k in state):
        for k in model_sd:
            if k.endswith("attn.qkv.bias"):
                state[k] = torch.zeros_like(model_sd[k])
                report.converted[k] = "0 (the checkpoint's attention has no qkv bias)"


def _match(
    encoder: VisionTransformer, state: StateDict, model_sd: StateDict, report: LoadReport, root: str, path: str,
    src: ArchGuess,
) -> StateDict:
    """The tensors to load; fills report.loaded / missing / unexpected. Shapes must agree key by key."""
    for k, v in state.items():
        if k in model_sd and model_sd[k].shape != v.shape:
            raise mismatch(
                path, src, encoder_arch(encoder),
                f"{k} is {tuple(v.shape)} in the checkpoint, {tuple(model_sd[k].shape)} in the model",
            )
    matched = {k: v for k, v in state.items() if k in model_sd}
    report.unexpected = [root + k for k in state if k not in model_sd]
    report.loaded = list(matched)
    ignored_pos = root + "pos_embed" in report.dropped or encoder.pos_embed_kind == "sincos"
    report.missing = [k for k in model_sd if k not in matched and not (k == "pos_embed" and ignored_pos)]
    if report.missing:
        report.notes.append(
            f"{len(report.missing)} encoder tensors were not in the checkpoint and keep their initial values"
        )
    if report.unexpected:
        report.notes.append(f"{len(report.unexpected)} checkpoint tensors fit no encoder parameter and were ignored")
    return matched


def load_encoder_weights(
    encoder: VisionTransformer,
    path: str | os.PathLike,
    allow_pickle: bool = False,
    strict: bool = False,
    logger: logging.Logger | None = None,
) -> LoadReport:
    """Load ViT weights from any supported checkpoint layout into `encoder` (in place).

    Accepts our pretraining checkpoints (`{"model": {"encoder.*", "decoder.*", ...}, "meta": ...}`)
    and exports (`.safetensors` + `.json`), official MAE pretraining checkpoints, BEiT checkpoints
    (layer scale and q/v biases converted; relative position bias dropped), timm / DeiT state dicts
    and `.safetensors`. Wrapper prefixes (`module.`, `encoder.`, `beit.`, ...) are stripped; decoder,
    head, tokenizer and mask-token keys dropped; `pos_embed` resampled to the encoder's grid (or
    ignored when the encoder uses fixed sin-cos positions).

    Args:
        encoder: the model to fill.
        path: checkpoint file.
        allow_pickle: allow arbitrary pickled objects (only for trusted files).
        strict: raise if any encoder key is missing or any checkpoint key is left unexplained.
        logger: where the report goes (default: the "target_ssl" logger).
    Returns:
        the `LoadReport` (also logged).
    Raises:
        ArchitectureMismatchError: the weights do not fit (width, depth, patch size, layer scale, ...).
        CheckpointFormatError: unreadable file, pickles without `allow_pickle`, or no ViT weights in it.
    """
    logger = logger or logging.getLogger("target_ssl")
    raw, meta, path = read_weights(path, allow_pickle)
    spath, keys = str(path), list(raw)
    if not any(k == ANCHOR or k.endswith("." + ANCHOR) for k in keys) and any(
        "embeddings.patch_embeddings" in k for k in keys
    ):
        raise CheckpointFormatError(
            f"{path} uses Hugging Face transformers names (embeddings.patch_embeddings, encoder.layer.N), "
            "which are not supported; load it with timm or transformers and save a timm-style state dict"
        )
    report = LoadReport(spath, "", "", str(encoder_arch(encoder)))
    state, root = convert_to_encoder(raw, meta, report)
    state = _keep_beit_rel_pos(encoder, raw, root, state, report)
    src = infer_arch(state, num_heads=meta.get("num_heads"))
    report.source_arch = str(src)
    model_sd = encoder.state_dict()
    _refuse_other_architecture(spath, state, src, encoder_arch(encoder), model_sd)

    convert_pos_embed(encoder, state, meta, src, report, root)
    state.pop("dist_token", None)
    if not any(k in model_sd for k in state):  # checked before the fill-ins below, which always match
        raise CheckpointFormatError(
            f"no encoder weights found in {path}: none of its keys match a ViT's "
            f"(e.g. {', '.join(keys[:5])}); expected timm names like patch_embed.proj.weight, blocks.0.attn.qkv.weight"
        )
    _fill_absent(state, model_sd, report)
    matched = _match(encoder, state, model_sd, report, root, spath, src)
    if strict and (report.missing or report.unexpected):
        raise ArchitectureMismatchError(
            f"strict loading of {path} failed: missing {group_keys(report.missing) or 'none'}; "
            f"unexpected {group_keys(report.unexpected) or 'none'}. Load with strict=False to accept this."
        )
    encoder.load_state_dict(matched, strict=False)
    logger.info("%s", report)
    for note in report.notes:
        logger.warning("%s: %s", path.name, note)
    return report
