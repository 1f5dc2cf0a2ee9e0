"""Non-finite loss guard and the save-on-interrupt helper."""

from __future__ import annotations

import pytest
import torch

from engine.guards import NonFiniteLossError, check_finite


def test_finite_loss_passes_without_callback() -> None:
    calls: list[int] = []
    check_finite(torch.tensor(1.5), step=3, on_fail=lambda: calls.append(1))
    check_finite(0.0, step=4, on_fail=lambda: calls.append(1))
    assert calls == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_loss_saves_then_raises_with_advice(value: float) -> None:
    calls: list[int] = []

    def on_fail() -> str:
        calls.append(1)
        return "/runs/x/nonfinite.pth"

    comps = {"loss_mim": torch.tensor(1.0), "loss_nce": torch.tensor(value)}
    with pytest.raises(NonFiniteLossError) as info:
        check_finite(torch.tensor(value), step=1234, on_fail=on_fail, components=comps)
    assert calls == [1]
    msg = str(info.value)
    assert "step 1234" in msg and "/runs/x/nonfinite.pth" in msg
    assert "Non-finite terms: loss_nce." in msg
    assert "lower the learning rate" in msg and "fp32" in msg and "check the data" in msg
    assert info.value.step == 1234


def test_failing_callback_does_not_hide_the_loss_error() -> None:
    def on_fail() -> None:
        raise OSError("disk full")

    with pytest.raises(NonFiniteLossError, match="Saving state failed: OSError: disk full"):
        check_finite(torch.tensor(float("nan")), step=1, on_fail=on_fail)


