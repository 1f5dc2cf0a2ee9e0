"""The pretraining health probe: `transfer.probing` run on the encoder while it pretrains.

`pretrain` may not import `transfer` (dependencies point one way), so the tools layer builds the
monitor and hands it to the pretraining loop (`pretrain.loop.train(cfg, monitor)`).
"""

from __future__ import annotations

import logging

import torch

from engine.config import ConfigError
from engine.distributed import is_main_process
from pretrain.config import PretrainConfig
from transfer.probe_data import ProbeSet, build_probe_set
from transfer.probing import run_probe

_log = logging.getLogger("target_ssl")
# The labels that come with each pretraining source.
AUTO_PROBE_DATA = {"ade20k": "ade20k", "coco": "coco", "lvis": "coco", "folder": "folder", "demo": "demo_coco"}


def probe_data_kind(cfg: PretrainConfig) -> str:
    """The probe's label source for this run (`probe.data`, or the pretraining source's labels)."""
    kind = cfg.probe.data
    if kind != "auto":
        return kind
    if cfg.data.name not in AUTO_PROBE_DATA:
        raise ConfigError(f"probe.data=auto has no labels for data.name={cfg.data.name}; set --probe-data")
    return AUTO_PROBE_DATA[cfg.data.name]


class ProbeMonitor:
    """(encoder, device) -> `probe/<metric>/block<t>` and `probe_random/...` (see `run_probe`).

    The labelled set is read on the first call (on the main process only; the others return no
    metrics) and kept in memory with the random-init baseline's scores, which are computed once.
    """

    def __init__(self, cfg: PretrainConfig) -> None:
        p = cfg.probe
        self.kind = probe_data_kind(cfg)
        self.root = p.root if p.root is not None else (None if self.kind.startswith("demo_") else cfg.data.root)
        self.img_size = p.img_size or cfg.data.img_size
        self.max_train, self.max_val, self.taps = p.max_train, p.max_val, p.taps
        self.seed = cfg.run.seed
        self.probe_set: ProbeSet | None = None
        if self.img_size % cfg.model.patch_size:
            raise ConfigError(f"probe.img_size={self.img_size} is not a multiple of the patch size {cfg.model.patch_size}")

    def __call__(self, encoder: torch.nn.Module, device: torch.device) -> dict[str, float]:
        if not is_main_process():
            return {}
        if self.probe_set is None:
            self.probe_set = build_probe_set(self.kind, self.root, self.img_size, self.max_train, self.max_val)
            _log.info("probe: %s, %d fit / %d held-out images at %d px", self.probe_set.source,
                      int(self.probe_set.is_train.sum()), int((~self.probe_set.is_train).sum()), self.img_size)
        return run_probe(encoder, self.probe_set, self.taps, device, self.seed)


def build_monitor(cfg: PretrainConfig) -> ProbeMonitor | None:
    """The monitor `--probe-every` asks for, or None when the probe is off."""
    return ProbeMonitor(cfg) if cfg.probe.every_epochs else None
