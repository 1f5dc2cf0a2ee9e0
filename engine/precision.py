"""Mixed precision: one name ("auto" | "bf16" | "fp16" | "fp32") -> autocast + grad scaler.

``auto`` means bf16 on CUDA (fp16 if the GPU has no bf16) and fp32 on CPU: CPU bf16 matmuls are
far slower than fp32 on common x86 parts, so autocast there only costs time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["PRECISIONS", "resolve_precision", "autocast", "make_grad_scaler", "autocast_dtype"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def resolve_precision(name: str, device: str | torch.device) -> str:
    """Turn a requested precision into the concrete one used on ``device``.

    Returns:
        ``"bf16"``, ``"fp16"`` or ``"fp32"``.
    """
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {name!r}")
    dev = _device_type(device)
    if name == "auto":
        if dev == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if name == "bf16" and dev == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16; use precision='fp16' (with loss scaling) or 'fp32'")
    return name


def autocast_dtype(precision: str) -> torch.dtype:
    """torch dtype of a resolved precision name."""
    if precision not in _DTYPES:
        raise ValueError(f"expected a resolved precision (bf16/fp16/fp32), got {precision!r}")
    return _DTYPES[precision]


@contextlib.contextmanager
def autocast(precision: str, device: str | torch.device) -> Iterator[None]:
    """Autocast region for the forward pass (and loss); a no-op for fp32.

    Args:
        precision: a name accepted by :func:`resolve_precision` (``auto`` is resolved here).
        device: the device the model runs on.
    """
    resolved = resolve_precision(precision, device)
    with torch.autocast(
        device_type=_device_type(device), dtype=_DTYPES[resolved], enabled=resolved != "fp32"
    ):
        yield


def make_grad_scaler(precision: str, device: str | torch.device) -> torch.amp.GradScaler:
    """GradScaler that is enabled only for fp16 (bf16 has fp32's exponent range; no scaling).

    A disabled scaler is a transparent pass-through (``scale(loss)`` is ``loss``, ``step`` calls
    ``optimizer.step()``), so loops use the same code for every precision. Its ``state_dict()``
    goes into checkpoints under ``"scaler"``.
    """
    resolved = resolve_precision(precision, device)
    return torch.amp.GradScaler(_device_type(device), enabled=resolved == "fp16")
