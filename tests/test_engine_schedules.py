"""LR schedules against closed-form formulas at hand-picked steps, and set_lr with lr_scale."""

from __future__ import annotations

import math

import pytest
import torch

from engine.config import OptimConfig
from engine.schedules import (
    constant,
    get_lr,
    schedule_from_config,
    set_lr,
    warmup_cosine,
    warmup_multistep,
    warmup_poly,
)


def cosine_ref(s: int, total: int, warm: int, start: float, final: float) -> float:
    if s < warm:
        return start + (1 - start) * s / warm
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))


@pytest.mark.parametrize("step", [0, 1, 5, 9, 10, 11, 40, 55, 99, 100])
def test_warmup_cosine_matches_formula(step: int) -> None:
    sched = warmup_cosine(total_steps=100, warmup_steps=10, warmup_start=0.1, final=0.05)
    assert sched(step) == pytest.approx(cosine_ref(step, 100, 10, 0.1, 0.05), abs=1e-9)


def test_warmup_cosine_landmarks() -> None:
    sched = warmup_cosine(total_steps=1000, warmup_steps=100)
    assert sched(0) == 0.0
    assert sched(50) == pytest.approx(0.5)
    assert sched(100) == pytest.approx(1.0)
    assert sched(550) == pytest.approx(0.5)  # half-way through the cosine part
    assert sched(1000) == pytest.approx(0.0, abs=1e-12)
    assert sched(5000) == pytest.approx(0.0, abs=1e-12)  # past the end: stays at final
    no_warm = warmup_cosine(total_steps=10, warmup_steps=0)
    assert no_warm(0) == pytest.approx(1.0)
    assert no_warm(5) == pytest.approx(0.5)


def test_warmup_multistep_matches_mask_rcnn_3x() -> None:
    # 36 "epochs" of 10 iterations, x0.1 at 27 and 33, 50-iteration warmup from 0.001.
    total, milestones, warm, start = 360, [270, 330], 50, 0.001
    sched = warmup_multistep(total, milestones, gamma=0.1, warmup_steps=warm, warmup_start=start)
    for s in [0, 10, 25, 49]:
        assert sched(s) == pytest.approx(start + (1 - start) * s / warm, abs=1e-9)
    for s, expected in [(50, 1.0), (269, 1.0), (270, 0.1), (329, 0.1), (330, 0.01), (360, 0.01)]:
        assert sched(s) == pytest.approx(expected, abs=1e-12), s


def test_warmup_multistep_exact_at_milestones_for_long_runs() -> None:
    # A 6x COCO schedule is ~528k iterations; the drop must land exactly on the milestone step.
    total = 72 * 7330
    milestones = [66 * 7330, 69 * 7330]
    sched = warmup_multistep(total, milestones, warmup_steps=500)
    for m, before, after in [(milestones[0], 1.0, 0.1), (milestones[1], 0.1, 0.01)]:
        assert sched(m - 1) == pytest.approx(before)
        assert sched(m) == pytest.approx(after)


def test_warmup_multistep_warmup_reaches_decayed_value() -> None:
    # Warmup ramps into whatever the step schedule is at the end of warmup.
    sched = warmup_multistep(100, [5], gamma=0.5, warmup_steps=10, warmup_start=0.0)
    assert sched(10) == pytest.approx(0.5)
    assert sched(4) == pytest.approx(0.5 * 4 / 10)


@pytest.mark.parametrize("power", [1.0, 0.9, 2.0])
def test_warmup_poly_matches_formula(power: float) -> None:
    total, warm, start, final = 200, 20, 1e-6, 0.01

    def main(s: int) -> float:
        return final + (1 - final) * (1 - s / total) ** power

    sched = warmup_poly(total, power=power, warmup_steps=warm, warmup_start=start, final=final)
    for s in [0, 7, 19]:
        assert sched(s) == pytest.approx(start + (main(warm) - start) * s / warm, abs=1e-9)
    for s in [20, 21, 100, 150, 199, 200]:
        assert sched(s) == pytest.approx(main(s), abs=1e-9)


def test_constant_and_validation() -> None:
    sched = constant(10, warmup_steps=2, warmup_start=0.0)
    assert [sched(s) for s in (0, 1, 2, 10)] == pytest.approx([0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(10, 10)
    with pytest.raises(ValueError, match="milestones"):
        warmup_multistep(100, [50, 40])
    with pytest.raises(ValueError, match="milestones"):
        warmup_multistep(100, [100])


def test_schedule_from_config() -> None:
    cfg = OptimConfig(schedule="multistep", milestones=(30,), gamma=0.2, warmup_steps=0)
    sched = schedule_from_config(cfg, 40)
    assert sched(29) == pytest.approx(1.0) and sched(30) == pytest.approx(0.2)
    cfg = OptimConfig(schedule="poly", poly_power=1.0, warmup_steps=0, final_lr_ratio=0.0)
    assert schedule_from_config(cfg, 40)(10) == pytest.approx(0.75)


def test_set_lr_honours_lr_scale() -> None:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [a], "lr_scale": 0.25}, {"params": [b]}], lr=1.0)
    logged = set_lr(opt, base_lr=2e-3, multiplier=0.5)
    assert logged == pytest.approx(1e-3)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3 * 0.5 * 0.25)
    assert opt.param_groups[1]["lr"] == pytest.approx(2e-3 * 0.5)
    assert get_lr(opt) == pytest.approx(1e-3)
