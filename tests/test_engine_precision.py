"""Precision names -> autocast dtype and grad scaler."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.precision import autocast, autocast_dtype, make_grad_scaler, resolve_precision


def test_resolve_precision() -> None:
    assert resolve_precision("auto", "cpu") == "fp32"  # CPU bf16 matmuls are slow
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    for name in ("bf16", "fp16", "fp32"):
        assert resolve_precision(name, "cpu") == name
    with pytest.raises(ValueError, match=r"one of \('auto', 'bf16', 'fp16', 'fp32'\)"):
        resolve_precision("fp8", "cpu")


def test_auto_on_cuda_prefers_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the capability query is consulted, so this runs without a GPU.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "fp16"
    with pytest.raises(ValueError, match="does not support bf16"):
        resolve_precision("bf16", "cuda")


@pytest.mark.parametrize(
    ("name", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32), ("auto", torch.float32)]
)
def test_autocast_dtype_on_cpu(name: str, dtype: torch.dtype) -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast(name, "cpu"):
        out = a @ b
    assert out.dtype == dtype
    assert (a @ b).dtype == torch.float32  # restored after the block
    assert autocast_dtype("fp16") == torch.float16


def test_grad_scaler_enabled_only_for_fp16() -> None:
    for name in ("bf16", "fp32", "auto"):
        scaler = make_grad_scaler(name, "cpu")
        assert not scaler.is_enabled()
        loss = torch.tensor(2.0, requires_grad=True)
        assert scaler.scale(loss) is loss  # transparent pass-through
        assert scaler.state_dict() == {}
    scaler = make_grad_scaler("fp16", "cpu")
    assert scaler.is_enabled()
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.ones(2, 3)).sum()
    scaler.scale(loss).backward()
    assert torch.allclose(model.weight.grad, torch.full((1, 3), 2.0) * scaler.get_scale())
    scaler.step(opt)
    scaler.update()
    assert scaler.state_dict()["scale"] == scaler.get_scale()
