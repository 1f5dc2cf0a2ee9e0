"""End-to-end pretraining images/s (the real run: loader workers + step) beside its two bounds.

Three figures for one configuration (`--e2e-*` flags of `benchmark data --end-to-end`):
- `loader`: the run's DataLoader alone (its workers, its batch), batches/s x batch;
- `model`: the run's training step alone on a synthetic batch already on the device (what
  `benchmark pretrain` measures);
- `end_to_end`: `pretrain.loop.train` for `--e2e-steps` updates, the trainer's own images/s over its
  last 20 steps (worker start-up excluded).
The smaller of the first two bounds the third; a user sees which one to spend on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from engine.benchmarking import benchmark_device, print_table, time_steps
from engine.optim import build_adamw
from engine.precision import make_grad_scaler, resolve_precision
from pretrain.benchmark import synthetic_batch, training_step
from pretrain.config import PretrainConfig, default_config
from pretrain.data import collate
from pretrain.loop import build_dataset, train
from pretrain.methods import build_encoder, build_method, needs_tokenizer
from pretrain.tokenizers import build_tokenizer

from .bench_images import ensure_bench_images

__all__ = ["end_to_end", "e2e_config"]


def e2e_config(args: argparse.Namespace, images: Path, out: Path) -> PretrainConfig:
    """The short run: `--e2e-method` / `--e2e-arch` (`--e2e-depth` blocks) on the generated JPEGs."""
    cfg = default_config(args.e2e_method, "folder")
    r = dataclasses.replace
    return r(
        cfg,
        data=r(cfg.data, root=str(images), img_size=args.crop, num_workers=args.e2e_workers,
               augment="mae" if args.e2e_method == "mae" else "default"),  # the large-data recipe
        # --e2e-depth also caps MAE's 8-block decoder: a tiny run is tiny throughout.
        model=r(cfg.model, arch=args.e2e_arch, depth=args.e2e_depth,
                mae_decoder_depth=min(8, args.e2e_depth or 8)),
        schedule=r(cfg.schedule, batch_size=args.e2e_batch, epochs=10_000, stop_at_step=args.e2e_steps),
        run=r(cfg.run, output_dir=str(out), log_every=1, ckpt_every_steps=10**9, device=args.device,
              precision=args.precision),
    )  # fmt: skip


def loader_rate(cfg: PretrainConfig, batches: int) -> float:
    """Images/s of the run's DataLoader alone, after its first batch (worker start-up excluded)."""
    loader = DataLoader(build_dataset(cfg), batch_size=cfg.schedule.batch_size, shuffle=True,
                        num_workers=cfg.data.num_workers, collate_fn=collate, drop_last=True)  # fmt: skip
    it = iter(loader)
    next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches - 1):
        next(it)
        n += cfg.schedule.batch_size
    return n / (time.perf_counter() - start)


def model_rate(cfg: PretrainConfig, device: torch.device, precision: str, iters: int) -> float:
    """Images/s of the run's training step alone, on a synthetic batch already on the device."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(vocab_size=cfg.tokenizer.vocab_size) if needs_tokenizer(cfg.model) else None
    encoder = build_encoder(cfg.model, cfg.data.img_size)
    method = build_method(cfg.model, encoder, tokenizer, cfg.dino).to(device).train()
    optimizer = build_adamw(method, lr=1e-4, weight_decay=0.05)
    scaler = make_grad_scaler(precision, device)
    local = (cfg.dino.local_crops_number, cfg.dino.local_crop_size)
    b = cfg.schedule.batch_size
    batch = synthetic_batch(cfg.model.method, b, cfg.data.img_size, cfg.model.patch_size, device, local)
    step = training_step(method, optimizer, scaler, batch, precision, device)
    return b / time_steps(step, device, warmup=2, iters=iters)["step_s"]


def run_rate(cfg: PretrainConfig) -> float:
    """The trainer's images/s at the end of a real run of `cfg` (its last 20-step window)."""
    result = train(cfg)
    lines = (Path(result["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    return float([json.loads(x) for x in lines if "images_per_s" in x][-1]["images_per_s"])


def end_to_end(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Loader-only, model-only and end-to-end images/s of one short run; prints a table."""
    device = benchmark_device(args.device)
    precision = resolve_precision(args.precision, device)
    images = ensure_bench_images(*_size(folder), max(args.images, 10 * args.e2e_batch), folder.parent)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = e2e_config(args, images / "images", Path(tmp) / "run")
        rates = {
            "loader": loader_rate(cfg, min(args.e2e_steps, 10)),
            "model": model_rate(cfg, device, precision, max(3, args.iters)),
            "end_to_end": run_rate(cfg),
        }
    torch.set_num_threads(1)  # train() may have changed it; the data suite runs with one
    bound = "loader" if rates["loader"] < rates["model"] else "model"
    m = cfg.model
    row = {"method": m.method, "arch": m.arch, "depth": m.depth, "img": cfg.data.img_size,
           "batch": cfg.schedule.batch_size, "workers": cfg.data.num_workers, "device": device.type,
           **{f"{k}_img/s": v for k, v in rates.items()}, "bound": bound}  # fmt: skip
    print_table([row], title="End to end: loader alone, step alone, real run (images/s)")
    return row


def _size(folder: Path) -> tuple[int, int]:
    w, h = folder.name.split("_")[0].split("x")
    return int(w), int(h)
