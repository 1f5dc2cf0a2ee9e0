"""UperNet training steps on a ViT: iterations/s, images/s, peak memory, model TFLOP/s (synthetic data).

    python tools/benchmark.py seg --archs vit_small vit_base --size 512 --batch-size 2

A step is the full training step of the recipe: forward of encoder + adapter + UPerHead + auxiliary
head, both losses at the input resolution, backward, AdamW with layer decay. Inputs are random
images and labels already on the device, so data loading is excluded.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from engine.benchmarking import (
    benchmark_device,
    peak_tflops,
    print_table,
    sdpa_flop_jit,
    time_steps,
    write_json,
)
from engine.optim import build_adamw
from engine.precision import autocast, make_grad_scaler, resolve_precision

from .model import UperNet, build_upernet

# UPerHead width per encoder (BEiT's ViT-B recipe: 768; mmseg's ViT-S / DeiT-S configs: 512).
HEAD_CHANNELS = {"vit_tiny": 256, "vit_small": 512, "vit_base": 768, "vit_large": 1024, "vit_huge": 1024}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archs", nargs="+", default=["vit_base"], help="encoder sizes (vit_small, vit_base, ...)")
    p.add_argument("--size", type=int, default=512, help="square crop side (512 in the ADE20k recipe)")
    p.add_argument("--batch-size", type=int, default=2, help="images per step (per device)")
    p.add_argument("--num-classes", type=int, default=150)
    p.add_argument("--channels", type=int, default=None, help="UPerHead width (default: per arch, 768 for ViT-B)")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute encoder blocks in backward")
    p.add_argument("--no-flops", action="store_true", help="skip the fvcore FLOP count (and TFLOP/s)")


def forward_flops(model: UperNet, size: int) -> float:
    """Forward FLOPs of one image: fvcore's multiply-add count (attention included) x 2."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore imports / traces with torch.jit, which warns about deprecation
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(model, (x,))
        analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_jit)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        macs = analysis.total()
    model.train(was_training)
    return 2.0 * macs


def bench_arch(arch: str, args: argparse.Namespace, device: torch.device, precision: str) -> dict:
    """Time the training step of one UperNet; returns a table row."""
    torch.manual_seed(0)
    channels = args.channels or HEAD_CHANNELS.get(arch, 768)
    model = build_upernet(arch, args.num_classes, channels=channels, img_size=args.size, drop_path=0.1,
                          grad_checkpointing=args.grad_checkpointing).to(device).train()
    optimizer = build_adamw(model, lr=1e-4, weight_decay=0.05, layer_decay=0.65,
                            num_layers=model.backbone.encoder.depth, prefix=UperNet.ENCODER_PREFIX)
    scaler = make_grad_scaler(precision, device)
    B, S = args.batch_size, args.size
    images = torch.randn(B, 3, S, S, device=device)
    labels = torch.randint(0, args.num_classes, (B, S, S), device=device)
    labels[:, : S // 8] = 255  # some ignored pixels, as in real crops

    def step() -> None:
        with autocast(precision, device):
            loss = model(images, labels)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    timing = time_steps(step, device, warmup=args.warmup, iters=args.iters)
    row = {
        "arch": arch,
        "size": S,
        "batch": B,
        "precision": precision,
        "head_ch": channels,
        "it/s": 1.0 / timing["step_s"],
        "img/s": B / timing["step_s"],
        "step_ms": 1000.0 * timing["step_s"],
        "peak_mem_MiB": timing["peak_mem_mib"],
        "GFLOP/step": None,
        "TFLOP/s": None,
        "MFU": None,
    }
    if not args.no_flops:
        # A training step costs about 3x the forward (the backward is about twice the forward).
        train_flops = 3.0 * forward_flops(model, S) * B
        peak = peak_tflops(device, precision)
        row["GFLOP/step"] = train_flops / 1e9
        row["TFLOP/s"] = train_flops / timing["step_s"] / 1e12
        row["MFU"] = row["TFLOP/s"] / peak if peak else None
    return row


def run(args: argparse.Namespace) -> list[dict]:
    device = benchmark_device(args.device)
    precision = resolve_precision(args.precision, device)
    rows = []
    for arch in args.archs:
        rows.append(bench_arch(arch, args, device, precision))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_table(rows, title=f"UperNet training step ({device.type}, {precision})")
    write_json(rows, args.out, suite="seg", size=args.size, batch_size=args.batch_size)
    return rows
