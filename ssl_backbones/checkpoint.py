"""Checkpoint interop for the ViT encoder: read, convert, load, export.

Reads our pretraining checkpoints and exports, and the common public layouts (official MAE
pretraining checkpoints, BEiT, timm / DeiT state dicts, `.safetensors`), converts their names to
timm's `VisionTransformer` names (which our encoder uses), resamples position embeddings to the
encoder's grid, and refuses, with a message that names both architectures, weights that do not fit.

Safety: `.pth` files load with `torch.load(weights_only=True)`; the only class allowed beyond
tensors and plain containers is `argparse.Namespace` (official MAE / BEiT / DeiT checkpoints pickle
their command-line args). Anything else needs an explicit `allow_pickle=True` (`--allow-pickle`).

Exports are `<name>.safetensors` + `<name>.json`; the weights load into
`timm.create_model(meta["timm_model"], pretrained=False, **meta["timm_kwargs"])` with `strict=True`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors

from .beit_rel_pos import convert_beit_rel_pos, keeps_beit_rel_pos
from .pos_embed import resample_pos_embed, sincos_2d_pos_embed
from .vit import ARCHS, VisionTransformer

FORMAT_VERSION = 1
_ANCHOR = "patch_embed.proj.weight"  # every ViT checkpoint has it; its prefix is the encoder's root
# Wrappers that trainers put around the encoder (DDP, detection backbones, pretraining methods, HF-like).
_KNOWN_ROOTS = ("module", "model", "backbone", "encoder", "beit", "base_encoder", "student", "teacher")
_CONTAINER_KEYS = ("model", "state_dict", "module", "teacher")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_ANY_BLOCK = re.compile(r"\bblocks\.\d+\.")  # also under a prefix, for grouping report lines

# Checkpoint keys that are not part of the encoder, with the reason shown in the report.
_DROP_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^decoder"), "decoder (pretraining only)"),
    (re.compile(r"^mask_token$"), "mask token (pretraining only)"),
    (re.compile(r"^tokenizer\."), "tokenizer (pretraining only)"),
    (re.compile(r"^(head|head_dist|lm_head|fc_norm|pre_logits)\."), "classifier / pretraining head"),
    (re.compile(r"^dist_token$"), "DeiT distillation token (the encoder has only a cls token)"),
    (
        re.compile(r"(relative_position_bias_table|relative_position_index)$|^rel_pos_bias\."),
        "relative position bias (the encoder uses absolute positions)",
    ),
)


class CheckpointFormatError(ValueError):
    """The file cannot be read safely, or holds no ViT encoder weights we recognise."""


class ArchitectureMismatchError(ValueError):
    """The checkpoint's weights do not fit the encoder's architecture."""


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _torch_load(path: Path, allow_pickle: bool) -> Any:
    if allow_pickle:
        logging.getLogger("target_ssl").warning(
            "loading %s with full unpickling (allow_pickle=True): only do this for files you trust", path
        )
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        # MAE / BEiT / DeiT save their argparse args next to the weights; that class is harmless.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise CheckpointFormatError(f"cannot read {path} as a PyTorch checkpoint: {e}") from e
        try:
            culprits = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # the listing is a nicety; the message below stands without it
            culprits = ""
        raise CheckpointFormatError(
            f"{path} pickles Python objects beyond tensors"
            + (f" ({culprits})" if culprits else "")
            + ", so it was not loaded (unpickling can run arbitrary code). If you trust the file, "
            "re-run with --allow-pickle (Python: allow_pickle=True)."
        ) from e
    except Exception as e:  # truncated / not a torch file: torch raises assorted types here
        raise CheckpointFormatError(
            f"cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: {e}); "
            "is the file complete (.pth / .pt / .bin / .safetensors)?"
        ) from e


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Find the state dict inside a training checkpoint: "model", then "state_dict", "module", ..."""
    trail = []
    for _ in range(4):
        if _is_tensor_dict(obj):
            return dict(obj), ".".join(trail)
        if not isinstance(obj, dict):
            break
        key = next((k for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
            if tensors:  # a state dict with a few non-tensor extras (e.g. a version number)
                return tensors, ".".join(trail)
            break
        trail.append(key)
        obj = obj[key]
    top = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointFormatError(
        f"{path} holds no state dict: looked for a flat dict of tensors or one under "
        f"{', '.join(repr(k) for k in _CONTAINER_KEYS)}; found {top}"
    )


def _side_json(path: Path) -> dict | None:
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointFormatError(f"{side} (metadata of {path.name}) is not valid JSON: {e}") from e
    return None


def _read(path: str | os.PathLike, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], dict, Path]:
    """-> (state dict, metadata found beside or inside the weights, resolved path)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (check the path given as weights)")
    if path.suffix == ".npz":
        raise CheckpointFormatError(
            f"{path} is a JAX .npz checkpoint, which is not supported: load it with timm "
            "(timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))) "
            "and save model.state_dict() as .safetensors or .pth"
        )
    meta: dict = {}
    if path.suffix == ".safetensors":
        try:
            state = load_safetensors(str(path), device="cpu")
        except Exception as e:
            raise CheckpointFormatError(
                f"cannot read {path} as safetensors ({e}); is the file complete?"
            ) from e
        meta = _side_json(path) or {}
        return state, meta, path
    obj = _torch_load(path, allow_pickle)
    state, _ = _unwrap(obj, path)
    if isinstance(obj, dict):
        if isinstance(obj.get("meta"), dict):
            meta = dict(obj["meta"])
        elif isinstance(obj.get("args"), argparse.Namespace):
            meta = {"args": vars(obj["args"])}
    return state, meta, path


def read_checkpoint(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read the state dict of a checkpoint file (on CPU), unwrapping training containers.

    `.safetensors` via safetensors; anything else via `torch.load(weights_only=True)` with
    `argparse.Namespace` allowed. The state dict is taken from "model", then "state_dict", "module",
    "teacher", or the file itself when it is a flat dict of tensors. Keys are returned unchanged.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointFormatError: unreadable, holds pickled objects (without `allow_pickle`), or no tensors.
    """
    return _read(path, allow_pickle)[0]


# ---------------------------------------------------------------------------------------------
# Architecture description
# ---------------------------------------------------------------------------------------------


@dataclass
class ArchGuess:
    """What a set of ViT weights looks like: width, depth, patch size (heads only when recorded)."""

    embed_dim: int | None
    depth: int | None
    patch_size: int | None
    num_heads: int | None = None

    @property
    def name(self) -> str | None:
        for arch, spec in ARCHS.items():
            if (spec.embed_dim, spec.depth) == (self.embed_dim, self.depth) and self.num_heads in (
                None,
                spec.num_heads,
            ):
                return arch
        return None

    def __str__(self) -> str:
        parts = [f"{self.embed_dim} wide", f"{self.depth} blocks"]
        if self.num_heads is not None:
            parts.append(f"{self.num_heads} heads")
        parts.append(f"patch {self.patch_size}")
        return f"{self.name or 'custom ViT'} ({', '.join(parts)})"


def infer_arch(state: dict[str, torch.Tensor], num_heads: int | None = None) -> ArchGuess:
    """Guess a ViT's size from timm-named weights: width from the patch projection (or cls token),
    depth from the largest block index, patch size from the projection's kernel."""
    proj = state.get(_ANCHOR)
    embed_dim = proj.shape[0] if proj is not None else None
    if embed_dim is None and "cls_token" in state:
        embed_dim = state["cls_token"].shape[-1]
    blocks = [int(m.group(1)) for k in state if (m := _BLOCK.match(k))]
    depth = max(blocks) + 1 if blocks else None
    patch = proj.shape[-1] if proj is not None and proj.ndim == 4 else None
    return ArchGuess(embed_dim, depth, patch, num_heads)


def _encoder_arch(encoder: VisionTransformer) -> ArchGuess:
    return ArchGuess(encoder.embed_dim, encoder.depth, encoder.patch_size, encoder.num_heads)


# ---------------------------------------------------------------------------------------------
# The load report
# ---------------------------------------------------------------------------------------------


def _group(keys: Iterable[str]) -> str:
    """'blocks.0.x', 'blocks.1.x' -> 'blocks.N.x (x2)': keeps reports short for deep models."""
    counts: dict[str, int] = {}
    for k in keys:
        g = _ANY_BLOCK.sub("blocks.N.", k)
        counts[g] = counts.get(g, 0) + 1
    return ", ".join(f"{g} (x{n})" if n > 1 else g for g, n in counts.items())


@dataclass
class LoadReport:
    """What `load_encoder_weights` did with each key.

    loaded: encoder keys set from the checkpoint. missing: encoder keys the checkpoint lacks (left
    as initialised). unexpected: checkpoint keys that fit nothing (ignored). resized / converted /
    dropped: key -> what was done and why. notes: warnings worth reading (also logged).
    """

    path: str
    source_format: str
    source_arch: str
    target_arch: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    resized: dict[str, str] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"encoder weights from {self.path}: {self.source_format}, {self.source_arch} "
            f"-> {self.target_arch}; loaded {len(self.loaded)} tensors"
        ]
        if self.converted:
            by_how: dict[str, list[str]] = {}
            for k, how in self.converted.items():
                by_how.setdefault(_ANY_BLOCK.sub("blocks.N.", how), []).append(k)
            lines += [f"  converted {_group(ks)} <- {how}" for how, ks in by_how.items()]
        lines += [f"  resized {k}: {how}" for k, how in self.resized.items()]
        if self.dropped:
            by_why: dict[str, list[str]] = {}
            for k, why in self.dropped.items():
                by_why.setdefault(why, []).append(k)
            lines += [f"  dropped {_group(ks)}: {why}" for why, ks in by_why.items()]
        if self.missing:
            lines.append(f"  missing (left as initialised): {_group(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (ignored): {_group(self.unexpected)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Conversion to the encoder's names
# ---------------------------------------------------------------------------------------------


def _find_root(keys: list[str]) -> tuple[str, list[str]]:
    """The prefix under which the encoder's weights live ("" for a bare ViT), and the other roots."""
    roots = [k[: -len(_ANCHOR)] for k in keys if k == _ANCHOR or k.endswith("." + _ANCHOR)]
    if roots:
        # Prefer wrappers we know (module., encoder., ...) over others (a momentum / target encoder).
        def rank(root: str) -> tuple[int, int]:
            segs = [s for s in root.split(".") if s]
            return sum(s not in _KNOWN_ROOTS for s in segs), len(segs)

        roots.sort(key=rank)
        return roots[0], roots[1:]
    # No patch projection at all: strip well-known wrappers that most keys carry.
    root, rest = "", keys
    while rest:
        heads = [k.split(".", 1)[0] for k in rest if "." in k]
        top = max(set(heads), key=heads.count, default=None)
        if top not in _KNOWN_ROOTS or heads.count(top) <= len(rest) // 2:
            break
        root += top + "."
        rest = [k[len(top) + 1 :] for k in rest if k.startswith(top + ".")]
    return root, []


def _drop_reason(key: str) -> str | None:
    return next((why for pattern, why in _DROP_RULES if pattern.search(key)), None)


def _strip_known_roots(key: str) -> str:
    """'module.decoder.x' -> 'decoder.x', so the drop rules see the name under the wrappers."""
    head, _, rest = key.partition(".")
    while rest and head in _KNOWN_ROOTS:
        key = rest
        head, _, rest = key.partition(".")
    return key


def _guess_format(keys: list[str], meta: dict) -> str:
    if meta.get("format_version") is not None:
        return f"target-ssl export ({meta.get('method', 'unknown method')})"
    if "method" in meta:
        return f"target-ssl {meta['method']} pretraining checkpoint"
    if any(k.endswith(("gamma_1", "attn.q_bias", "relative_position_bias_table")) for k in keys):
        return "BEiT checkpoint"
    if any(k.split(".")[-1].startswith("decoder_") or k.startswith("decoder_") for k in keys):
        return "MAE pretraining checkpoint"
    if any(k.endswith("dist_token") for k in keys):
        return "DeiT (distilled) state dict"
    args = meta.get("args", {})
    if "mask_ratio" in args:
        return "MAE checkpoint"
    return "timm-style ViT state dict"


def _convert_beit(state: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """BEiT names -> timm names: gamma_1/2 -> ls1/ls2.gamma; q_bias, v_bias -> qkv.bias (k bias is 0)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.endswith((".gamma_1", ".gamma_2")):
            new = k[: -len("gamma_1")] + ("ls1.gamma" if k.endswith("1") else "ls2.gamma")
            out[new] = v
            report.converted[new] = k
        elif k.endswith((".attn.q_bias", ".attn.k_bias", ".attn.v_bias")):
            continue  # merged below
        else:
            out[k] = v
    for k in state:
        if not k.endswith(".attn.q_bias"):
            continue
        base = k[: -len("q_bias")]
        q, v = state[k], state.get(base + "v_bias")
        if v is None:
            raise CheckpointFormatError(f"{report.path}: {k} has no matching {base}v_bias")
        # BEiT's attention has no key bias (a constant key shift cancels in softmax); timm's fused qkv
        # wants one, so it is zero unless the checkpoint stores k_bias (timm's own BEiT does, as zeros).
        kb = state.get(base + "k_bias", torch.zeros_like(q))
        out[base + "qkv.bias"] = torch.cat([q, kb, v])
        report.converted[base + "qkv.bias"] = (
            f"cat({base}q_bias, {'k_bias' if base + 'k_bias' in state else 0}, {base}v_bias)"
        )
    return out


# ---------------------------------------------------------------------------------------------
# Position embeddings
# ---------------------------------------------------------------------------------------------


def _split_pos_embed(
    pos: torch.Tensor, num_prefix: int, grid_hint: tuple[int, int] | None, path: str
) -> tuple[torch.Tensor | None, torch.Tensor, tuple[int, int]]:
    """(1, prefix + h*w, D) -> (prefix slots (1, prefix, D) or None, patch part (1, h*w, D), (h, w)).

    timm stores a slot for each prefix token (cls, DeiT's dist) unless the model was built with
    `no_embed_class`; try the prefix count from the checkpoint's tokens first, then none.
    """
    n = pos.shape[1]
    for k in dict.fromkeys((num_prefix, 0, 1)):
        m = n - k
        if grid_hint is not None and grid_hint[0] * grid_hint[1] == m:
            grid = grid_hint
        elif m > 0 and math.isqrt(m) ** 2 == m:
            grid = (math.isqrt(m), math.isqrt(m))
        else:
            continue
        return (pos[:, :k] if k else None), pos[:, k:], grid
    raise CheckpointFormatError(
        f"{path}: cannot tell the grid of pos_embed with {n} positions (not a square after "
        f"removing {num_prefix} prefix slots); record img_size and patch_size in its metadata json"
    )


def _is_sincos(patch_pos: torch.Tensor, grid: tuple[int, int]) -> bool:
    table = sincos_2d_pos_embed(patch_pos.shape[-1], *grid) if patch_pos.shape[-1] % 4 == 0 else None
    return table is not None and torch.allclose(patch_pos[0].float(), table, atol=1e-4)


def _grid_hint(meta: dict, patch_size: int | None) -> tuple[int, int] | None:
    img = meta.get("img_size", meta.get("args", {}).get("input_size"))
    p = meta.get("patch_size", patch_size)
    if img is None or not p:
        return None
    h, w = (img, img) if isinstance(img, int) else tuple(img)
    return h // p, w // p


def _convert_pos_embed(
    encoder: VisionTransformer,
    state: dict[str, torch.Tensor],
    meta: dict,
    src: ArchGuess,
    report: LoadReport,
    root: str = "",
) -> None:
    """Replace state["pos_embed"] by a table in the encoder's layout, or remove it (sin-cos encoder).

    Report keys are the checkpoint's own names (`root` is the prefix stripped from them)."""
    pos = state.pop("pos_embed", None)
    if pos is None:
        if encoder.pos_embed_kind == "learned":
            report.notes.append(
                "the checkpoint has no absolute position embedding (e.g. a BEiT model with relative "
                "position bias): the learned pos_embed stays as initialised"
            )
        elif any(k.endswith("relative_position_bias_table") for k in report.dropped):
            report.notes.append(
                "the checkpoint encodes positions only as relative position bias, which is dropped; "
                "the encoder's fixed sin-cos positions are used instead"
            )
        return
    num_prefix = int("cls_token" in state) + int("dist_token" in state)
    prefix, patch_pos, grid = _split_pos_embed(pos, num_prefix, _grid_hint(meta, src.patch_size), report.path)
    ckpt_sincos = _is_sincos(patch_pos, grid) and (prefix is None or not prefix[:, :1].any())
    if encoder.pos_embed_kind == "sincos":
        # The table is a function of the grid; the encoder computes it for every input size.
        report.dropped[root + "pos_embed"] = (
            "ignored: fixed sin-cos in use (same table as the checkpoint's)"
            if ckpt_sincos
            else "ignored: fixed sin-cos in use"
        )
        if not ckpt_sincos:
            report.notes.append(
                "the checkpoint's pos_embed is learned but the encoder uses fixed sin-cos positions, so "
                "the checkpoint's positions are NOT used; build the encoder with pos_embed='learned' "
                "to use them"
            )
        return
    new_grid = encoder.grid_size
    if ckpt_sincos:
        # Recompute instead of interpolating: exact sin-cos for the new grid.
        patch_new = sincos_2d_pos_embed(patch_pos.shape[-1], *new_grid)[None].to(pos.dtype)
        how = f"fixed sin-cos {grid[0]}x{grid[1]} recomputed for {new_grid[0]}x{new_grid[1]}"
    else:
        patch_new = resample_pos_embed(patch_pos, grid, new_grid)
        how = f"{grid[0]}x{grid[1]} -> {new_grid[0]}x{new_grid[1]} (bicubic)"
    # Our cls slot: the checkpoint's cls slot, or zeros when it kept none (then cls had no position).
    cls_pos = prefix[:, :1] if prefix is not None else torch.zeros_like(patch_pos[:, :1])
    if prefix is not None and prefix.shape[1] > 1:
        report.dropped[root + "pos_embed[:, 1]"] = "position slot of the DeiT distillation token"
    state["pos_embed"] = torch.cat([cls_pos, patch_new], dim=1)
    if tuple(grid) != tuple(new_grid):
        report.resized["pos_embed"] = how
    if prefix is None:
        report.converted["pos_embed"] = "checkpoint pos_embed without a cls slot (cls slot set to 0)"


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _mismatch(path: str, src: ArchGuess, dst: ArchGuess, detail: str) -> ArchitectureMismatchError:
    if src.name is not None:
        fix = f"pass --arch {src.name}" + (
            f" with patch size {src.patch_size}" if src.patch_size != 16 else ""
        )
    else:
        fix = f"build the encoder with embed_dim={src.embed_dim}, depth={src.depth}, patch_size={src.patch_size}"
    return ArchitectureMismatchError(
        f"checkpoint {path} holds a {src} but the model is a {dst}: {detail}. "
        f"Build the model to match the checkpoint ({fix}) or use a checkpoint made for {dst.name or 'this model'}."
    )


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
    raw, meta, path = _read(path, allow_pickle)
    spath = str(path)
    keys = list(raw)
    if not any(k == _ANCHOR or k.endswith("." + _ANCHOR) for k in keys) and any(
        "embeddings.patch_embeddings" in k for k in keys
    ):
        raise CheckpointFormatError(
            f"{path} uses Hugging Face transformers names (embeddings.patch_embeddings, encoder.layer.N), "
            "which are not supported; load it with timm or transformers and save a timm-style state dict"
        )
    report = LoadReport(spath, _guess_format(keys, meta), "", str(_encoder_arch(encoder)))

    # 1. Keep the encoder's subtree; say why everything else goes.
    root, other_roots = _find_root(keys)
    if other_roots:
        report.notes.append(f"encoder weights taken from '{root}' (also found: {', '.join(other_roots)})")
    state: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        if k.startswith(root):
            state[k[len(root) :]] = v
        else:
            report.dropped[k] = _drop_reason(_strip_known_roots(k)) or f"outside the encoder (under '{root}')"
    for k in list(state):
        why = _drop_reason(k)
        if why is not None and not keeps_beit_rel_pos(encoder, k):
            report.dropped[root + k] = why
            if k != "dist_token":  # needed below to find pos_embed's prefix slots
                del state[k]

    # 2. Names: BEiT -> timm.
    state = _convert_beit(state, report)
    state = convert_beit_rel_pos(state, encoder, report.notes)  # rel_pos="beit" encoders only
    src = infer_arch(state, num_heads=meta.get("num_heads"))
    report.source_arch = str(src)
    dst = _encoder_arch(encoder)

    # 3. Architecture checks, with messages that say what the checkpoint is.
    if src.patch_size is not None and src.patch_size != dst.patch_size:
        raise _mismatch(spath, src, dst, f"patch size {src.patch_size} vs {dst.patch_size}")
    if src.embed_dim is not None and src.embed_dim != dst.embed_dim:
        raise _mismatch(spath, src, dst, f"width {src.embed_dim} vs {dst.embed_dim}")
    if src.depth is not None and src.depth != dst.depth:
        raise _mismatch(spath, src, dst, f"{src.depth} blocks vs {dst.depth}")
    if src.num_heads is not None and src.num_heads != dst.num_heads:
        raise _mismatch(spath, src, dst, f"{src.num_heads} heads vs {dst.num_heads}")
    model_sd = encoder.state_dict()
    has_ls_ckpt = any(k.endswith("ls1.gamma") for k in state)
    has_ls_model = any(k.endswith("ls1.gamma") for k in model_sd)
    if has_ls_ckpt and not has_ls_model:
        raise _mismatch(
            spath,
            src,
            dst,
            "the checkpoint uses layer scale (ls1.gamma / BEiT gamma_1) and the model does not; "
            "build the encoder with init_values set (e.g. 0.1)",
        )

    # 4. Positions, then parameters a checkpoint may lack without changing its function.
    _convert_pos_embed(encoder, state, meta, src, report, root)
    state.pop("dist_token", None)
    if not any(k in model_sd for k in state):  # checked before the fill-ins below, which always match
        raise CheckpointFormatError(
            f"no encoder weights found in {path}: none of its keys match a ViT's "
            f"(e.g. {', '.join(keys[:5])}); expected timm names like patch_embed.proj.weight, blocks.0.attn.qkv.weight"
        )
    if has_ls_model and not has_ls_ckpt:
        for k in model_sd:
            if k.endswith(("ls1.gamma", "ls2.gamma")):
                state[k] = torch.ones_like(model_sd[k])
                report.converted[k] = "1 (the checkpoint has no layer scale; gamma=1 computes what it did)"
    if not any(k.endswith("attn.qkv.bias") for k in state) and any(
        k.endswith("attn.qkv.weight") for k in state
    ):
        for k in model_sd:
            if k.endswith("attn.qkv.bias"):
                state[k] = torch.zeros_like(model_sd[k])
                report.converted[k] = "0 (the checkpoint's attention has no qkv bias)"

    # 5. Shapes must agree key by key (catches MLP ratio, input channels, ...).
    for k, v in state.items():
        if k in model_sd and model_sd[k].shape != v.shape:
            raise _mismatch(
                spath,
                src,
                dst,
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
        report.notes.append(
            f"{len(report.unexpected)} checkpoint tensors fit no encoder parameter and were ignored"
        )

    if strict and (report.missing or report.unexpected):
        raise ArchitectureMismatchError(
            f"strict loading of {path} failed: missing {_group(report.missing) or 'none'}; "
            f"unexpected {_group(report.unexpected) or 'none'}. Load with strict=False to accept this."
        )
    encoder.load_state_dict(matched, strict=False)
    logger.info("%s", report)
    for note in report.notes:
        logger.warning("%s: %s", path.name, note)
    return report


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def _export_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _atomic_write(target: Path, write) -> None:
    """Write via a temp file in the same folder + os.replace, so a crash never leaves half a file."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    _atomic_write(weights_path, lambda tmp: save_safetensors(tensors, tmp, metadata={"format": "pt"}))
    _atomic_write(
        json_path, lambda tmp: Path(tmp).write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    )
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
    meta = _side_json(weights_path)
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
