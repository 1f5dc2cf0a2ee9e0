"""Mask R-CNN training steps on a ViT: iterations/s, images/s, peak memory (synthetic data).

    python tools/benchmark.py det --archs vit_small vit_base --size 1024 --batch-size 2

A step is the full training step of the recipe: encoder + max-pool / deconv adapter (or the simple
feature pyramid) + FPN, RPN, RoI box and mask heads with their losses, backward, AdamW with the
detection param groups. ViTDet's options give more rows:

    python tools/benchmark.py det --archs vit_base --size 1024 --batch-size 1 --attention global window
    python tools/benchmark.py det --archs vit_base --size 512 --roi-heads mask_rcnn cascade --heads vitdet

`--attention`: "global" (today's encoder), "window" (ViTDet: patch tokens only, 14 x 14 windows
with ViTDet's 4 global blocks), each with `--rel-pos decomposed` for ViTDet's relative positions.
`--roi-heads cascade` swaps in the three-stage Cascade R-CNN box heads. Inputs are random `size` x `size` images with `--boxes` random boxes and
rectangle masks each, already on the device, so data loading is excluded. On CPU the peak memory
is the process's max RSS (it only grows: run one arch per call for clean numbers).
"""

from __future__ import annotations

import argparse

import torch

from engine.benchmarking import benchmark_device, print_table, time_steps, write_json
from engine.optim import build_adamw
from engine.precision import autocast, make_grad_scaler, resolve_precision

from .config import ModelConfig
from .model import ENCODER_PREFIX, build_mask_rcnn, encoder_of


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archs", nargs="+", default=["vit_small", "vit_base"], help="encoder sizes")
    p.add_argument("--size", type=int, default=1024, help="square image side (COCO training is ~800x1333)")
    p.add_argument("--batch-size", type=int, default=2, help="images per step (per device; 2 in the 3x recipe)")
    p.add_argument("--adapter", default="maxpool_deconv", choices=["maxpool_deconv", "simple_fpn"])
    p.add_argument("--num-classes", type=int, default=80)
    p.add_argument("--boxes", type=int, default=16, help="ground-truth instances per image")
    p.add_argument("--grad-checkpointing", action="store_true", help="recompute encoder blocks in backward")
    p.add_argument("--attention", nargs="+", default=["global"], choices=["global", "window"],
                   help="global attention, or ViTDet's 14x14 windows with 4 global blocks (one row each)")
    p.add_argument("--rel-pos", default="none", choices=["none", "decomposed"], help="ViTDet's relative positions")
    p.add_argument("--heads", default="torchvision", choices=["torchvision", "vitdet"], help="RPN / RoI head design")
    p.add_argument("--roi-heads", nargs="+", default=["mask_rcnn"], choices=["mask_rcnn", "cascade"],
                   help="Mask R-CNN's single box stage or Cascade R-CNN's three (one row each)")


def synthetic_batch(
    batch_size: int, size: int, num_boxes: int, num_classes: int, device: torch.device, seed: int = 0
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Random images in [0, 1] and targets: boxes (N, 4) xyxy, labels (N,), rectangle masks (N, S, S)."""
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    ys = torch.arange(size).view(1, size, 1)
    xs = torch.arange(size).view(1, 1, size)
    for _ in range(batch_size):
        xy = torch.rand(num_boxes, 2, generator=g) * size * 0.8
        wh = 16 + torch.rand(num_boxes, 2, generator=g) * (size * 0.4)
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], dim=1).floor()
        x0, y0, x1, y1 = (boxes[:, i].long().view(-1, 1, 1) for i in range(4))
        masks = ((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)).to(torch.uint8)
        labels = torch.randint(1, num_classes + 1, (num_boxes,), generator=g)
        images.append(torch.rand(3, size, size, generator=g).to(device))
        targets.append({"boxes": boxes.to(device), "labels": labels.to(device), "masks": masks.to(device)})
    return images, targets


def bench_config(arch: str, args: argparse.Namespace, attention: str = "global", roi_heads: str = "mask_rcnn") -> ModelConfig:
    """The benchmarked detector: `args`' adapter / heads / relative positions, one attention and RoI-head choice."""
    window = attention == "window"
    return ModelConfig(
        arch=arch, adapter=args.adapter, weights=None, drop_path=0.1, grad_checkpointing=args.grad_checkpointing,
        patch_only=window or args.rel_pos != "none", window_size=14 if window else 0, rel_pos=args.rel_pos,
        rel_pos_grid=args.size // 16, heads=args.heads, cascade=roi_heads == "cascade",
    )


def bench_arch(
    arch: str, args: argparse.Namespace, device: torch.device, precision: str,
    attention: str = "global", roi_heads: str = "mask_rcnn",
) -> dict:
    """Time the detector's training step for one encoder size and option set; returns a table row."""
    torch.manual_seed(0)
    cfg = bench_config(arch, args, attention, roi_heads)
    model = build_mask_rcnn(cfg, args.num_classes, test_size=args.size, test_max_size=args.size).to(device).train()
    optimizer = build_adamw(model, lr=1e-4, weight_decay=0.05, num_layers=encoder_of(model).depth, prefix=ENCODER_PREFIX)
    scaler = make_grad_scaler(precision, device)
    images, targets = synthetic_batch(args.batch_size, args.size, args.boxes, args.num_classes, device)

    def step() -> None:
        with autocast(precision, device):
            losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    timing = time_steps(step, device, warmup=args.warmup, iters=args.iters)
    return {
        "arch": arch,
        "adapter": args.adapter,
        "attention": attention + ("+relpos" if args.rel_pos != "none" else ""),
        "roi_heads": roi_heads,
        "heads": args.heads,
        "size": args.size,
        "batch": args.batch_size,
        "precision": precision,
        "it/s": 1.0 / timing["step_s"],
        "img/s": args.batch_size / timing["step_s"],
        "step_ms": 1000.0 * timing["step_s"],
        "peak_mem_MiB": timing["peak_mem_mib"],
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def run(args: argparse.Namespace) -> list[dict]:
    device = benchmark_device(args.device)
    precision = resolve_precision(args.precision, device)
    rows = []
    for arch in args.archs:
        for attention in args.attention:
            for roi_heads in args.roi_heads:
                rows.append(bench_arch(arch, args, device, precision, attention, roi_heads))
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    print_table(rows, title=f"Mask R-CNN training step ({device.type}, {precision})")
    write_json(rows, args.out, suite="det", size=args.size, batch_size=args.batch_size)
    return rows
