"""What a set of ViT weights is, and what loading did with each key: `ArchGuess`, `LoadReport`.

Also the mismatch refusal: :class:`ArchitectureMismatchError` with a message that names both
architectures and the flag that builds the right model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from .vit import ARCHS, VisionTransformer

__all__ = ["ArchGuess", "ArchitectureMismatchError", "LoadReport", "encoder_arch", "group_keys", "infer_arch", "mismatch"]

ANCHOR = "patch_embed.proj.weight"  # every ViT checkpoint has it; its prefix is the encoder's root
_BLOCK = re.compile(r"^blocks\.(\d+)\.")
_ANY_BLOCK = re.compile(r"\bblocks\.\d+\.")  # also under a prefix, for grouping report lines


class ArchitectureMismatchError(ValueError):
    """The checkpoint's weights do not fit the encoder's architecture."""


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
    proj = state.get(ANCHOR)
    embed_dim = proj.shape[0] if proj is not None else None
    if embed_dim is None and "cls_token" in state:
        embed_dim = state["cls_token"].shape[-1]
    blocks = [int(m.group(1)) for k in state if (m := _BLOCK.match(k))]
    depth = max(blocks) + 1 if blocks else None
    patch = proj.shape[-1] if proj is not None and proj.ndim == 4 else None
    return ArchGuess(embed_dim, depth, patch, num_heads)


def encoder_arch(encoder: VisionTransformer) -> ArchGuess:
    """The encoder's own size, in the same terms as :func:`infer_arch`."""
    return ArchGuess(encoder.embed_dim, encoder.depth, encoder.patch_size, encoder.num_heads)


# ---------------------------------------------------------------------------------------------
# The load report
# ---------------------------------------------------------------------------------------------


def group_keys(keys: Iterable[str]) -> str:
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
            lines += [f"  converted {group_keys(ks)} <- {how}" for how, ks in by_how.items()]
        lines += [f"  resized {k}: {how}" for k, how in self.resized.items()]
        if self.dropped:
            by_why: dict[str, list[str]] = {}
            for k, why in self.dropped.items():
                by_why.setdefault(why, []).append(k)
            lines += [f"  dropped {group_keys(ks)}: {why}" for why, ks in by_why.items()]
        if self.missing:
            lines.append(f"  missing (left as initialised): {group_keys(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected (ignored): {group_keys(self.unexpected)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

def mismatch(path: str, src: ArchGuess, dst: ArchGuess, detail: str) -> ArchitectureMismatchError:
    """The refusal for weights of `src` into a model of `dst`, with the flag that would fit."""
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
