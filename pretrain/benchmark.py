"""Pretraining steps of SplitMask, BEiT, MAE and DINO: images/s, peak memory, model FLOP utilisation.

    python tools/benchmark.py pretrain --methods splitmask beit mae dino --archs vit_small vit_base

A step is the full training step with the reference settings (224 px, random-projection tokenizer with
8192 words, SplitMask's 2-block decoder, MAE's 512 x 8 decoder, drop path 0.1, AdamW, bf16 on GPU),
on a synthetic batch already on the device (images plus the per-image masks the data workers would
make), so data loading is excluded. DINO's step has the multi-crop views (2 global crops at the
image size, `--local-crops` local crops at `--local-size`, 96 px at 224), its 65,536-prototype head,
the teacher's forward and the EMA update; an image counts once, whatever its number of crops.
FLOPs: fvcore's count of one forward (multiply-adds, x2 for FLOPs, SDPA included), x3 for forward +
backward of the trainable part; what runs without gradient (the tokenizer's matmul, DINO's teacher)
is counted once. The table also gives each method's step time relative to SplitMask, BEiT and MAE of
the same size (Table 8 of the paper: SplitMask 34.0 h vs BEiT 32.5 h).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from engine.benchmarking import benchmark_device, peak_tflops, print_table, time_steps, write_json
from engine.optim import build_adamw
from engine.precision import autocast, make_grad_scaler, resolve_precision
from engine.sharding import checkpoint_blocks, compile_blocks, transformer_blocks

from .config import DinoConfig, MaskConfig, ModelConfig
from .methods import METHODS, build_encoder, build_masking, build_method, needs_tokenizer
from .tokenizers import build_tokenizer


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--archs", nargs="+", default=["vit_small", "vit_base"])
    p.add_argument(
        "--batch-size", type=int, default=None, help="images per step (default 64 on GPU, 4 on CPU)"
    )
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count (and MFU)")
    p.add_argument("--local-crops", type=int, default=10, help="DINO's local crops per image")
    p.add_argument(
        "--local-size", type=int, default=None, help="DINO's local crop side (default 96 at 224, scaled)"
    )
    p.add_argument("--dino-out-dim", type=int, default=65536, help="DINO's prototypes")
    p.add_argument("--activation-checkpointing", action="store_true", help="recompute each block in backward")
    p.add_argument("--compile", action="store_true", help="torch.compile each block's forward")


def _sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for aten::scaled_dot_product_attention: QK^T and AV multiply-adds."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, n, d = q
    m, dv = k[-2], v[-1]
    return int(np.prod(batch)) * n * m * (d + dv)


class _LossOf(nn.Module):
    """Tensor-in, tensor-out view of a method for fvcore's tracer (it needs positional tensors)."""

    def __init__(self, method: nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.method = method
        self.keys = keys

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.method(dict(zip(self.keys, tensors)))["loss"]


# Modules that run without gradient: one forward per step, no backward.
_NO_GRAD_MODULES = ("method.tokenizer", "method.teacher_head")


def train_flops(method: nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """FLOPs of one training step on `batch`: 3 x forward of the trainable part + the no-gradient
    parts (tokenizer, DINO's teacher: its backbone is `method.encoder`) once."""
    from fvcore.nn import FlopCountAnalysis

    keys = list(batch)
    was_training = method.training
    method.eval()  # no drop path while tracing; the FLOPs are the same
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit tracing warnings
        analysis = FlopCountAnalysis(_LossOf(method, keys), tuple(batch[k] for k in keys))
        analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop_jit)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        total = analysis.total()
        by_module = analysis.by_module()
        frozen = _NO_GRAD_MODULES + (("method.encoder",) if hasattr(method, "teacher_head") else ())
        once = sum(by_module.get(name, 0) for name in frozen)
    method.train(was_training)
    return 2.0 * (3 * (total - once) + once)


def local_size_for(img_size: int, patch_size: int) -> int:
    """DINO's 96 px local crops at 224, scaled to `img_size` and rounded to whole patches."""
    return max(patch_size, round(img_size * 96 / 224 / patch_size) * patch_size)


def synthetic_batch(
    method: str,
    batch_size: int,
    img_size: int,
    patch_size: int,
    device: torch.device,
    local_crops: tuple[int, int] = (10, 96),
) -> dict[str, torch.Tensor]:
    """Random normalised images plus the masks the data workers would make for `method` (DINO:
    2 global crops and `local_crops` = (number, side) local crops per image)."""
    g = torch.Generator().manual_seed(0)
    if method == "dino":
        number, side = local_crops
        return {
            "global_crops": torch.randn(batch_size, 2, 3, img_size, img_size, generator=g).to(device),
            "local_crops": torch.randn(batch_size, number, 3, side, side, generator=g).to(device),
        }
    batch = {"images": torch.randn(batch_size, 3, img_size, img_size, generator=g)}
    grid = (img_size // patch_size,) * 2
    masking = build_masking(method, MaskConfig(), grid)
    if masking is not None:
        rng = np.random.default_rng(0)
        masks = [masking(rng) for _ in range(batch_size)]  # setup, outside the timed step
        batch.update({k: torch.stack([m[k] for m in masks]) for k in masks[0]})
    return {k: v.to(device) for k, v in batch.items()}


def training_step(
    method: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    batch: dict[str, torch.Tensor],
    precision: str,
    device: torch.device,
) -> Callable[[], None]:
    """One full training step of `method` on the fixed `batch`, as a closure to time: forward under
    autocast, backward through the scaler, DINO's before / after-update hooks, the optimizer step."""

    def step() -> None:
        with autocast(precision, device):
            loss = method(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        if hasattr(method, "before_update"):  # DINO: weight-decay schedule (step 1: prototypes train)
            method.before_update(1, 2, 1, optimizer)
        scaler.step(optimizer)
        scaler.update()
        if hasattr(method, "after_update"):  # DINO: the teacher's EMA
            method.after_update(1, 2, 1)

    return step


def bench(
    method_name: str, arch: str, args: argparse.Namespace, device: torch.device, precision: str
) -> dict:
    """Time one method's training step; returns a table row."""
    torch.manual_seed(0)
    cfg = ModelConfig(method=method_name, arch=arch)
    tokenizer = build_tokenizer(vocab_size=args.vocab_size) if needs_tokenizer(cfg) else None
    dino = DinoConfig(out_dim=args.dino_out_dim, local_crops_number=args.local_crops)
    method = build_method(cfg, build_encoder(cfg, args.img_size), tokenizer, dino).to(device).train()
    optimizer = build_adamw(method, lr=1e-4, weight_decay=0.05)
    if getattr(args, "activation_checkpointing", False):  # as run.activation_checkpointing / run.compile
        checkpoint_blocks(transformer_blocks(method))
    if getattr(args, "compile", False):
        compile_blocks(transformer_blocks(method))
    scaler = make_grad_scaler(precision, device)
    local = (args.local_crops, args.local_size or local_size_for(args.img_size, cfg.patch_size))
    batch = synthetic_batch(method_name, args.batch_size, args.img_size, cfg.patch_size, device, local)

    step = training_step(method, optimizer, scaler, batch, precision, device)
    timing = time_steps(step, device, warmup=args.warmup, iters=args.iters)
    row: dict[str, Any] = {
        "method": method_name,
        "arch": arch,
        "img": args.img_size,
        "batch": args.batch_size,
        "precision": precision,
        "act_ckpt": bool(getattr(args, "activation_checkpointing", False)),
        "compile": bool(getattr(args, "compile", False)),
        "step_ms": 1000.0 * timing["step_s"],
        "img/s": args.batch_size / timing["step_s"],
        "peak_mem_MiB": timing["peak_mem_mib"],
        "GFLOP/step": None,
        "TFLOP/s": None,
        "MFU": None,
    }
    if not args.no_flops:
        flops = train_flops(method, batch)
        peak = peak_tflops(device, precision)
        row["GFLOP/step"] = flops / 1e9
        row["TFLOP/s"] = flops / timing["step_s"] / 1e12
        row["MFU"] = row["TFLOP/s"] / peak if peak else None
    return row


def add_relative_times(rows: list[dict]) -> list[dict]:
    """Step time of each row relative to SplitMask's, BEiT's and MAE's of the same arch (when measured)."""
    by_key = {(r["method"], r["arch"]): r["step_ms"] for r in rows}
    for r in rows:
        for ref in ("splitmask", "beit", "mae"):
            base = by_key.get((ref, r["arch"]))
            r[f"time_vs_{ref}"] = r["step_ms"] / base if base else None
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    device = benchmark_device(args.device)
    precision = resolve_precision(args.precision, device)
    if args.batch_size is None:
        args.batch_size = 64 if device.type == "cuda" else 4
    rows = []
    for arch in args.archs:
        for method in args.methods:
            rows.append(bench(method, arch, args, device, precision))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    add_relative_times(rows)
    print_table(rows, title=f"Pretraining step ({device.type}, {precision}, {args.img_size} px)")
    write_json(rows, args.out, suite="pretrain", img_size=args.img_size, batch_size=args.batch_size)
    return rows
