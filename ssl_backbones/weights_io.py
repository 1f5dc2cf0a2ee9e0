"""Reading a weights file of any supported container into a flat state dict and its metadata.

`.safetensors` (metadata from the `.json` beside it) or a PyTorch file (`.pth`, `.pt`, `.bin`) read
with the tree's one safe-load policy, :func:`engine.checkpoint.load_checkpoint` (weights_only); the
only class allowed beyond tensors and plain containers is `argparse.Namespace` (official MAE / BEiT /
DeiT checkpoints pickle their command-line args). Anything else needs `allow_pickle=True`
(`--allow-pickle`). JAX `.npz` files are refused with the timm recipe to convert them.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_safetensors

from engine.checkpoint import load_checkpoint

__all__ = ["CheckpointFormatError", "read_checkpoint", "read_weights", "read_side_json"]

# Where training checkpoints keep the weights, tried in this order.
_CONTAINER_KEYS = ("model", "state_dict", "module", "teacher")


class CheckpointFormatError(ValueError):
    """The file cannot be read safely, or holds no ViT encoder weights we recognise."""


def _torch_file(path: Path, allow_pickle: bool) -> Any:
    """The object in a PyTorch file, via the engine's safe loader; errors name the file and the fix."""
    try:
        # MAE / BEiT / DeiT save their argparse args next to the weights; that class is harmless.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return load_checkpoint(path, allow_pickle=allow_pickle)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as e:
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
    except Exception as e:  # truncated / not a torch file / not a dict: assorted types
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


def read_side_json(path: Path) -> dict | None:
    """The metadata json beside a weights file (`x.safetensors` -> `x.json`), or None."""
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointFormatError(f"{side} (metadata of {path.name}) is not valid JSON: {e}") from e
    return None


def read_weights(path: str | os.PathLike, allow_pickle: bool) -> tuple[dict[str, torch.Tensor], dict, Path]:
    """-> (state dict, metadata found beside or inside the weights, the path).

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointFormatError: unreadable, `.npz`, pickles without `allow_pickle`, or no tensors.
    """
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
        meta = read_side_json(path) or {}
        return state, meta, path
    obj = _torch_file(path, allow_pickle)
    state, _ = _unwrap(obj, path)
    if isinstance(obj, dict):
        if isinstance(obj.get("meta"), dict):
            meta = dict(obj["meta"])
        elif isinstance(obj.get("args"), argparse.Namespace):
            meta = {"args": vars(obj["args"])}
    return state, meta, path


def read_checkpoint(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read the state dict of a checkpoint file (on CPU), unwrapping training containers.

    `.safetensors` via safetensors; anything else via `engine.checkpoint.load_checkpoint` with
    `argparse.Namespace` allowed. The state dict is taken from "model", then "state_dict", "module",
    "teacher", or the file itself when it is a flat dict of tensors. Keys are returned unchanged.

    Raises:
        FileNotFoundError: the file does not exist.
        CheckpointFormatError: unreadable, holds pickled objects (without `allow_pickle`), or no tensors.
    """
    return read_weights(path, allow_pickle)[0]
