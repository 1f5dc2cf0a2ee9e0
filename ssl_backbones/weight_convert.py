"""Conversion of a checkpoint's state dict to our encoder's (timm's) names, one small function per source.

The pipeline, in the spirit of timm's ``checkpoint_filter_fn``:

1. :func:`detect_source` sniffs the layout from the keys and metadata: ``ours`` (our pretraining
   checkpoints and exports), ``mae`` (official MAE), ``beit`` (BEiT, also timm's Beit), ``deit``
   (distilled DeiT) or ``timm`` (any timm-named ViT);
2. :func:`encoder_subtree` keeps the encoder's keys (under the wrapper prefix it finds: ``module.``,
   ``encoder.``, ``beit.``, ...) and drops classifier heads, saying why for every dropped key;
3. ``_convert_<source>`` drops what only that source carries and renames to timm's names;
4. :func:`convert_pos_embed` brings ``pos_embed`` to the encoder's grid (or drops it for a fixed
   sin-cos encoder).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch

from .pos_embed import resample_pos_embed, sincos_2d_pos_embed
from .vit import VisionTransformer
from .weight_report import ANCHOR, ArchGuess, LoadReport
from .weights_io import CheckpointFormatError

__all__ = ["SOURCES", "convert_pos_embed", "convert_to_encoder", "detect_source", "encoder_subtree"]

# Wrappers that trainers put around the encoder (DDP, detection backbones, pretraining methods, HF-like).
_KNOWN_ROOTS = ("module", "model", "backbone", "encoder", "beit", "base_encoder", "student", "teacher")

Rule = tuple[re.Pattern[str], str]  # a key pattern and the reason shown in the report
_HEADS: tuple[Rule, ...] = (
    (re.compile(r"^(head|head_dist|lm_head|fc_norm|pre_logits)\."), "classifier / pretraining head"),
)
_DECODER: Rule = (re.compile(r"^decoder"), "decoder (pretraining only)")
_MASK_TOKEN: Rule = (re.compile(r"^mask_token$"), "mask token (pretraining only)")
_TOKENIZER: Rule = (re.compile(r"^tokenizer\."), "tokenizer (pretraining only)")
_REL_POS: Rule = (
    re.compile(r"(relative_position_bias_table|relative_position_index)$|^rel_pos_bias\."),
    "relative position bias (the encoder uses absolute positions)",
)
_DIST_TOKEN: Rule = (re.compile(r"^dist_token$"), "DeiT distillation token (the encoder has only a cls token)")
_ALL_RULES: tuple[Rule, ...] = (_DECODER, _MASK_TOKEN, _TOKENIZER, *_HEADS, _DIST_TOKEN, _REL_POS)

StateDict = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Layout sniffing and the encoder's subtree
# ---------------------------------------------------------------------------------------------


def detect_source(keys: list[str], meta: dict) -> tuple[str, str]:
    """-> (source id, human label for the report). Source ids are the keys of :data:`SOURCES`."""
    if meta.get("format_version") is not None:
        return "ours", f"target-ssl export ({meta.get('method', 'unknown method')})"
    if "method" in meta:
        return "ours", f"target-ssl {meta['method']} pretraining checkpoint"
    if any(k.endswith(("gamma_1", "attn.q_bias", "relative_position_bias_table")) for k in keys):
        return "beit", "BEiT checkpoint"
    if any(k.split(".")[-1].startswith("decoder_") or k.startswith("decoder_") for k in keys):
        return "mae", "MAE pretraining checkpoint"
    if any(k.endswith("dist_token") for k in keys):
        return "deit", "DeiT (distilled) state dict"
    if "mask_ratio" in meta.get("args", {}):
        return "mae", "MAE checkpoint"
    return "timm", "timm-style ViT state dict"


def _find_root(keys: list[str]) -> tuple[str, list[str]]:
    """The prefix under which the encoder's weights live ("" for a bare ViT), and the other roots."""
    roots = [k[: -len(ANCHOR)] for k in keys if k == ANCHOR or k.endswith("." + ANCHOR)]
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


def _strip_known_roots(key: str) -> str:
    """'module.decoder.x' -> 'decoder.x', so the drop rules see the name under the wrappers."""
    head, _, rest = key.partition(".")
    while rest and head in _KNOWN_ROOTS:
        key = rest
        head, _, rest = key.partition(".")
    return key

def _drop_reason(key: str, rules: tuple[Rule, ...]) -> str | None:
    return next((why for pattern, why in rules if pattern.search(key)), None)


def _drop(state: StateDict, report: LoadReport, root: str, rules: tuple[Rule, ...], keep: bool = False) -> None:
    """Record (and, unless `keep`, remove) the keys of `state` that match `rules`."""
    for k in list(state):
        why = _drop_reason(k, rules)
        if why is not None:
            report.dropped[root + k] = why
            if not keep:
                del state[k]


def encoder_subtree(raw: StateDict, report: LoadReport) -> tuple[StateDict, str]:
    """The encoder's weights with the wrapper prefix removed, minus classifier heads; -> (state, root).

    Everything left out is recorded in ``report.dropped`` with its reason."""
    root, other_roots = _find_root(list(raw))
    if other_roots:
        report.notes.append(f"encoder weights taken from '{root}' (also found: {', '.join(other_roots)})")
    state: StateDict = {}
    for k, v in raw.items():
        if k.startswith(root):
            state[k[len(root) :]] = v
        else:
            why = _drop_reason(_strip_known_roots(k), _ALL_RULES)
            report.dropped[k] = why or f"outside the encoder (under '{root}')"
    _drop(state, report, root, _HEADS)
    return state, root


# ---------------------------------------------------------------------------------------------
# One converter per source: what only it carries, and its names -> timm's
# ---------------------------------------------------------------------------------------------


def _convert_ours(state: StateDict, report: LoadReport, root: str) -> StateDict:
    """Our checkpoints: timm names already; the pretraining parts go."""
    _drop(state, report, root, (_DECODER, _MASK_TOKEN, _TOKENIZER))
    return state


def _convert_mae(state: StateDict, report: LoadReport, root: str) -> StateDict:
    """Official MAE: timm names; `decoder_*` and the mask token are pretraining only."""
    _drop(state, report, root, (_DECODER, _MASK_TOKEN))
    return state


def _convert_deit(state: StateDict, report: LoadReport, root: str) -> StateDict:
    """Distilled DeiT: the dist token goes, but stays in `state` until its pos_embed slot is found."""
    _drop(state, report, root, (_DIST_TOKEN,), keep=True)
    return state


def _convert_timm(state: StateDict, report: LoadReport, root: str) -> StateDict:
    """timm's ViT names are ours; heads were dropped with the subtree."""
    return state


def _convert_beit(state: StateDict, report: LoadReport, root: str) -> StateDict:
    """BEiT names -> timm names: gamma_1/2 -> ls1/ls2.gamma; q_bias, v_bias -> qkv.bias (k bias is 0).

    Relative position bias and the mask token are dropped."""
    _drop(state, report, root, (_REL_POS, _MASK_TOKEN))
    out: StateDict = {}
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


SOURCES: dict[str, Callable[[StateDict, LoadReport, str], StateDict]] = {
    "ours": _convert_ours,
    "mae": _convert_mae,
    "beit": _convert_beit,
    "deit": _convert_deit,
    "timm": _convert_timm,
}


def convert_to_encoder(raw: StateDict, meta: dict, report: LoadReport) -> tuple[StateDict, str]:
    """Sniff the source of `raw`, keep the encoder's subtree and convert it to timm names.

    Sets ``report.source_format``; -> (state with timm names, the stripped wrapper prefix)."""
    source, report.source_format = detect_source(list(raw), meta)
    state, root = encoder_subtree(raw, report)
    return SOURCES[source](state, report, root), root


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


def convert_pos_embed(
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


