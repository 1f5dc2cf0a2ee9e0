"""Per-iteration learning-rate schedules as multipliers of the base lr.

Each schedule is an :class:`LRSchedule`: ``schedule(step) -> float`` for an integer optimizer step
in ``[0, total_steps]`` (steps past the end keep the final value). The curves themselves are
``fvcore.common.param_scheduler`` objects (detectron2 composes its schedules the same way); this
module only fixes the step -> progress mapping and the warmup conventions:

* ``warmup_cosine`` (BEiT / MAE pretraining): linear ``warmup_start -> 1`` over ``warmup_steps``,
  then a half cosine ``1 -> final`` over the *remaining* ``total_steps - warmup_steps`` steps.
* ``warmup_multistep`` (Mask R-CNN 3x): ``gamma ** (number of milestones <= step)`` with milestones
  in absolute steps; the first ``warmup_steps`` ramp linearly from ``warmup_start`` to the value
  the step schedule has at ``warmup_steps`` (detectron2's ``WarmupParamScheduler``).
* ``warmup_poly`` (UperNet / mmseg): ``final + (1 - final) * (1 - step / total) ** power`` over the
  whole run, with the same linear warmup into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    CosineParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
    PolynomialDecayParamScheduler,
)

if TYPE_CHECKING:
    from engine.config import OptimConfig

__all__ = [
    "LRSchedule",
    "warmup_cosine",
    "warmup_multistep",
    "warmup_poly",
    "constant",
    "schedule_from_config",
    "set_lr",
    "get_lr",
]


# fvcore's ConstantParamScheduler rejects where == 1.0 (the last step); a flat line does not.
_CONSTANT_ONE = LinearParamScheduler(1.0, 1.0)


class LRSchedule:
    """A learning-rate multiplier as a function of the integer step.

    Args:
        scheduler: fvcore scheduler over progress ``where = step / total_steps`` in [0, 1].
        total_steps: number of optimizer steps in the run (> 0).
        name: short description used in ``repr``.
    """

    def __init__(self, scheduler: ParamScheduler, total_steps: int, name: str) -> None:
        if total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        self.scheduler = scheduler
        self.total_steps = int(total_steps)
        self.name = name

    def __call__(self, step: int) -> float:
        step = min(max(int(step), 0), self.total_steps)
        return float(self.scheduler(step / self.total_steps))

    def __repr__(self) -> str:
        return f"LRSchedule({self.name}, total_steps={self.total_steps})"


def _check_warmup(total_steps: int, warmup_steps: int) -> None:
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}), got {warmup_steps}")


def _with_warmup(
    main: ParamScheduler,
    total_steps: int,
    warmup_steps: int,
    warmup_start: float,
    main_interval: str,
) -> ParamScheduler:
    """Prepend a linear ramp ``warmup_start -> main(end of warmup)`` over ``warmup_steps``.

    ``main_interval="rescaled"`` runs ``main`` over the post-warmup part only; ``"fixed"`` evaluates
    it at the global progress (so its milestones / decay are in absolute steps).
    """
    if warmup_steps == 0:
        return main
    frac = warmup_steps / total_steps
    target = main(0.0) if main_interval == "rescaled" else main(frac)
    return CompositeParamScheduler(
        [LinearParamScheduler(warmup_start, target), main],
        lengths=[frac, 1.0 - frac],
        interval_scaling=["rescaled", main_interval],
    )


def warmup_cosine(
    total_steps: int, warmup_steps: int, warmup_start: float = 0.0, final: float = 0.0
) -> LRSchedule:
    """Linear warmup then cosine decay to ``final`` (multiplier) at ``total_steps``.

    ``m(s) = warmup_start + (1 - warmup_start) * s / W`` for ``s < W``, else
    ``final + (1 - final) * (1 + cos(pi * (s - W) / (T - W))) / 2``.
    """
    _check_warmup(total_steps, warmup_steps)
    main = CosineParamScheduler(start_value=1.0, end_value=final)
    sched = _with_warmup(main, total_steps, warmup_steps, warmup_start, "rescaled")
    return LRSchedule(sched, total_steps, f"warmup_cosine(warmup={warmup_steps}, final={final})")


def warmup_multistep(
    total_steps: int,
    milestones: Sequence[int],
    gamma: float = 0.1,
    warmup_steps: int = 0,
    warmup_start: float = 0.001,
) -> LRSchedule:
    """Step decay by ``gamma`` at each milestone (absolute steps), with linear warmup.

    ``m(s) = gamma ** #{k : milestones[k] <= s}`` after warmup; during warmup
    ``warmup_start + (m(W) - warmup_start) * s / W``.
    """
    _check_warmup(total_steps, warmup_steps)
    milestones = [int(m) for m in milestones]
    if any(b <= a for a, b in zip(milestones, milestones[1:])) or any(
        not 0 < m < total_steps for m in milestones
    ):
        raise ValueError(f"milestones must be increasing and inside (0, {total_steps}), got {milestones}")
    if milestones:
        values = [gamma**k for k in range(len(milestones) + 1)]
        main: ParamScheduler = MultiStepParamScheduler(values, num_updates=total_steps, milestones=milestones)
    else:
        main = _CONSTANT_ONE
    sched = _with_warmup(main, total_steps, warmup_steps, warmup_start, "fixed")
    return LRSchedule(sched, total_steps, f"warmup_multistep(milestones={milestones}, gamma={gamma})")


class _PolyToFinal(ParamScheduler):
    """``final + (1 - final) * (1 - where) ** power`` (fvcore's poly decays to 0 only)."""

    def __init__(self, power: float, final: float) -> None:
        self.poly = PolynomialDecayParamScheduler(base_value=1.0 - final, power=power)
        self.final = final

    def __call__(self, where: float) -> float:
        return self.final + self.poly(where)


def warmup_poly(
    total_steps: int,
    power: float = 1.0,
    warmup_steps: int = 0,
    warmup_start: float = 1e-6,
    final: float = 0.0,
) -> LRSchedule:
    """Polynomial decay over the whole run with linear warmup into it.

    ``m(s) = final + (1 - final) * (1 - s / T) ** power`` after warmup; during warmup
    ``warmup_start + (m(W) - warmup_start) * s / W``.
    """
    _check_warmup(total_steps, warmup_steps)
    main = _PolyToFinal(power, final)
    sched = _with_warmup(main, total_steps, warmup_steps, warmup_start, "fixed")
    return LRSchedule(sched, total_steps, f"warmup_poly(power={power}, warmup={warmup_steps})")


def constant(total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0) -> LRSchedule:
    """Constant multiplier 1 after an optional linear warmup."""
    _check_warmup(total_steps, warmup_steps)
    sched = _with_warmup(_CONSTANT_ONE, total_steps, warmup_steps, warmup_start, "fixed")
    return LRSchedule(sched, total_steps, f"constant(warmup={warmup_steps})")


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, multiplier: float) -> float:
    """Set every group's lr to ``base_lr * multiplier * group.get("lr_scale", 1.0)``.

    ``lr_scale`` comes from layer-wise decay (:func:`engine.optim.param_groups`). Returns the
    unscaled lr ``base_lr * multiplier`` (what loops log).
    """
    lr = base_lr * multiplier
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    return lr


def get_lr(optimizer: torch.optim.Optimizer) -> float:
    """The largest group lr (the un-decayed one when layer decay is on); for logging."""
    return max(group["lr"] for group in optimizer.param_groups)


def schedule_from_config(cfg: OptimConfig, total_steps: int) -> LRSchedule:
    """The :class:`LRSchedule` described by an :class:`engine.config.OptimConfig`."""
    if cfg.schedule == "cosine":
        return warmup_cosine(total_steps, cfg.warmup_steps, cfg.warmup_start, cfg.final_lr_ratio)
    if cfg.schedule == "multistep":
        return warmup_multistep(total_steps, cfg.milestones, cfg.gamma, cfg.warmup_steps, cfg.warmup_start)
    if cfg.schedule == "poly":
        return warmup_poly(
            total_steps, cfg.poly_power, cfg.warmup_steps, cfg.warmup_start, cfg.final_lr_ratio
        )
    if cfg.schedule == "constant":
        return constant(total_steps, cfg.warmup_steps, cfg.warmup_start)
    raise ValueError(f"unknown schedule {cfg.schedule!r}; expected cosine, multistep, poly or constant")
