"""AdamW parameter groups: weight-decay exclusions and ViT layer-wise lr decay (BEiT / ELECTRA).

Layer ids follow BEiT's fine-tuning recipe: the embeddings (``patch_embed``, ``cls_token``,
``pos_embed``, ``mask_token``, ...) are layer 0, transformer block ``i`` is layer ``i + 1``, and
everything else (final norm, heads, adapters, necks, detection / segmentation heads) is layer
``num_layers + 1``, which trains at the full lr. The lr of layer ``l`` is scaled by
``layer_decay ** (num_layers + 1 - l)``.

timm has ``param_groups_layer_decay`` but it relies on the model's own ``group_matcher`` and
cannot see an encoder buried inside a detector (``backbone.body.encoder.blocks.3...``), which is the
case we need, so the grouping is done here on parameter names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "EMBED_NAMES",
    "NO_DECAY_NAMES",
    "vit_layer_id",
    "infer_num_layers",
    "param_groups",
    "build_adamw",
    "clip_grad",
]

# Name components that belong to the embedding stage (layer id 0).
EMBED_NAMES = ("patch_embed", "cls_token", "pos_embed", "mask_token", "dist_token", "reg_token")
NO_DECAY_NAMES = ("pos_embed", "cls_token", "mask_token", "dist_token")

# "blocks.<i>." preceded by start-of-name or a dot, so "decoder_blocks.0." is not an encoder block.
_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def _strip_prefix(name: str, prefix: str | None) -> str | None:
    """``name`` relative to ``prefix`` or None if it lies outside it (``prefix`` may omit the dot)."""
    if not prefix:
        return name
    p = prefix if prefix.endswith(".") else prefix + "."
    return name[len(p) :] if name.startswith(p) else None


def vit_layer_id(name: str, num_layers: int, prefix: str | None = None) -> int:
    """Layer id of parameter ``name`` for layer-wise lr decay.

    Args:
        name: full parameter name, e.g. ``"blocks.3.attn.qkv.weight"`` or
            ``"backbone.body.encoder.blocks.3.attn.qkv.weight"``.
        num_layers: number of transformer blocks of the encoder.
        prefix: optional module path of the encoder (``"backbone.body.encoder"``). Names outside it
            are heads (``num_layers + 1``). Without a prefix, ``blocks.N.`` / embedding names are
            matched anywhere as a whole dotted component.

    Returns:
        0 for embeddings, ``i + 1`` for block ``i``, ``num_layers + 1`` otherwise.
    """
    rel = _strip_prefix(name, prefix)
    if rel is None:
        return num_layers + 1
    m = _BLOCK_RE.search(rel)
    if m is not None:
        block = int(m.group(1))
        if block >= num_layers:
            raise ValueError(
                f"parameter {name!r} is in block {block} but num_layers={num_layers}; "
                "pass the encoder depth as num_layers"
            )
        return block + 1
    parts = rel.split(".")
    # Embeddings of the encoder only: the first component below the prefix (or any component
    # before a "blocks" when no prefix is given, e.g. "encoder.patch_embed.proj.weight").
    if prefix:
        is_embed = parts[0] in EMBED_NAMES
    else:
        is_embed = any(p in EMBED_NAMES for p in parts)
    return 0 if is_embed else num_layers + 1


def infer_num_layers(model: nn.Module, prefix: str | None = None) -> int:
    """Number of encoder blocks = 1 + the largest ``blocks.N`` index among the parameter names."""
    ids = []
    for name, _ in model.named_parameters():
        rel = _strip_prefix(name, prefix)
        m = _BLOCK_RE.search(rel) if rel is not None else None
        if m is not None:
            ids.append(int(m.group(1)))
    if not ids:
        raise ValueError(f"no 'blocks.N.' parameters found (prefix={prefix!r}); pass num_layers explicitly")
    return max(ids) + 1


def _no_weight_decay(name: str, param: torch.Tensor, no_decay_names: Sequence[str]) -> bool:
    # 1-D tensors are biases, norm weights and layer-scale gammas; tokens / position embeddings
    # are matched by name (also prefixed variants such as "decoder_pos_embed").
    if param.ndim <= 1 or name.endswith(".bias"):
        return True
    return any(part.endswith(n) for part in name.split(".") for n in no_decay_names)


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float | None = None,
    num_layers: int | None = None,
    no_decay_names: Sequence[str] = NO_DECAY_NAMES,
    prefix: str | None = None,
) -> list[dict]:
    """Optimizer parameter groups with weight-decay exclusions and optional layer-wise lr decay.

    Args:
        model: the full model (DDP-unwrapped). Parameters with ``requires_grad=False`` are skipped.
        weight_decay: decay for >= 2-D weights.
        layer_decay: per-layer lr factor (e.g. 0.65); None or 1.0 disables layer decay.
        num_layers: encoder depth; inferred from the ``blocks.N`` names when None.
        no_decay_names: name components (suffix match) that never get weight decay.
        prefix: module path of the ViT encoder inside ``model`` (see :func:`vit_layer_id`).

    Returns:
        One group per (layer id, decay / no decay) that has parameters, each a dict with
        ``params``, ``param_names``, ``weight_decay``, ``lr_scale`` and ``layer_id``. Order is
        deterministic (by layer id, decay first), so optimizer state dicts line up across runs.
    """
    use_ld = layer_decay is not None and layer_decay != 1.0
    if use_ld and num_layers is None:
        num_layers = infer_num_layers(model, prefix)
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = _no_weight_decay(name, p, no_decay_names)
        if use_ld:
            assert num_layers is not None and layer_decay is not None
            layer_id = vit_layer_id(name, num_layers, prefix)
            scale = layer_decay ** (num_layers + 1 - layer_id)
        else:
            layer_id, scale = 0, 1.0
        key = (layer_id, no_wd)
        if key not in groups:
            groups[key] = {
                "params": [],
                "param_names": [],
                "weight_decay": 0.0 if no_wd else weight_decay,
                "lr_scale": scale,
                "layer_id": layer_id,
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    return [groups[k] for k in sorted(groups)]


def build_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
    layer_decay: float | None = None,
    num_layers: int | None = None,
    prefix: str | None = None,
    eps: float = 1e-8,
    no_decay_names: Sequence[str] = NO_DECAY_NAMES,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; each group's initial lr is ``lr * lr_scale``.

    Loops then call :func:`engine.schedules.set_lr` every step with the same base ``lr``.
    """
    groups = param_groups(model, weight_decay, layer_decay, num_layers, no_decay_names, prefix)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    # Fused AdamW (one kernel for all parameters) where every parameter is on CUDA; foreach
    # (multi-tensor) elsewhere. Both stay valid after FSDP swaps the parameters for DTensors.
    fused = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                             fused=fused or None)  # fmt: skip


def clip_grad(params: Iterable[torch.Tensor], max_norm: float | None) -> torch.Tensor:
    """Clip the global L2 grad norm to ``max_norm`` (None or <= 0: only measure it).

    With a GradScaler call ``scaler.unscale_(optimizer)`` first. Returns the total norm before
    clipping (a 0-dim tensor; inf/nan when a grad overflowed, which the scaler then skips).
    Sharded (FSDP DTensor) gradients: the norm is reduced over every process's shards first, so it
    is the same global norm DDP measures.
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return torch.zeros(())
    total = torch.nn.utils.get_total_norm([p.grad for p in params])
    if hasattr(total, "full_tensor"):  # a DTensor (partial sums per process) -> the global value
        total = total.full_tensor()
    if max_norm is not None and max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total
