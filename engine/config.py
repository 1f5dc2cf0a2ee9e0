"""Typed configs: the dataclasses every task shares, and the public config API in one place.

A config is a tree of dataclasses. The concerns live in their own modules, re-exported here:

- :mod:`engine.config_files`: ``load_config(name_or_path, search_dirs)`` (config folders are
  packages that compose by import; loose files run by path);
- :mod:`engine.config_overrides`: ``apply_overrides(cfg, ["optim.lr=2e-4", ...])``, the one
  ``--set`` parser of every tool (typed by the field annotations, "did you mean" on unknown keys),
  and ``validate_config``;
- :mod:`engine.config_saving`: ``config_to_dict``, ``format_config``, ``save_config``;
- :mod:`engine.errors`: ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from engine.config_files import load_config
from engine.config_overrides import apply_overrides, validate_config
from engine.config_saving import config_to_dict, format_config, save_config
from engine.errors import ConfigError

__all__ = [
    "ConfigError",
    "OptimConfig",
    "RunConfig",
    "load_config",
    "apply_overrides",
    "validate_config",
    "config_to_dict",
    "save_config",
    "format_config",
]


# --------------------------------------------------------------------------------------------
# Shared dataclasses
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class OptimConfig:
    """AdamW + lr schedule. Steps are optimizer steps (iterations), not epochs.

    ``schedule`` selects the curve in :func:`engine.schedules.schedule_from_config`:
    ``cosine`` (to ``final_lr_ratio``), ``multistep`` (x ``gamma`` at each of ``milestones``),
    ``poly`` (power ``poly_power``), ``constant``; all after ``warmup_steps`` of linear warmup from
    ``warmup_start`` x lr.
    """

    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layer_decay: float | None = None
    clip_grad: float | None = None
    schedule: Literal["cosine", "multistep", "poly", "constant"] = "cosine"
    warmup_steps: int = 0
    warmup_start: float = 0.001
    final_lr_ratio: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    poly_power: float = 1.0

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ConfigError(f"optim.layer_decay must be in (0, 1] or None, got {self.layer_decay}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclasses.dataclass
class RunConfig:
    """Where a run writes, how it checkpoints and resumes.

    ``resume``: None (fresh run), ``"auto"`` (newest checkpoint in ``output_dir`` if any) or a
    checkpoint path. ``overwrite``: delete an earlier run in ``output_dir`` and start over (without
    it, or ``resume``, a folder holding another run is refused). ``allow_pickle`` permits legacy
    (non weights-only) checkpoint loading.

    Past one GPU's memory (:mod:`engine.sharding`): ``parallel`` ``"ddp"`` (replicas) or
    ``"fsdp"`` (FSDP2 per transformer block, sharded DCP checkpoints; needs torchrun);
    ``activation_checkpointing`` recomputes each block's activations in backward; ``compile``
    runs each block's forward through ``torch.compile``.
    """

    output_dir: str = "runs/default"
    seed: int = 0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = 20
    ckpt_every_steps: int = 1000
    keep_last: int = 2
    resume: str | None = None
    overwrite: bool = False
    allow_pickle: bool = False
    parallel: Literal["ddp", "fsdp"] = "ddp"
    activation_checkpointing: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if self.log_every <= 0:
            raise ConfigError(f"run.log_every must be positive, got {self.log_every}")
        if self.ckpt_every_steps <= 0:
            raise ConfigError(f"run.ckpt_every_steps must be positive, got {self.ckpt_every_steps}")
