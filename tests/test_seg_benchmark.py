"""The seg benchmark: its FLOP count includes attention (checked by hand) and a run writes its table."""

from __future__ import annotations

import json
import warnings

import torch

from transfer.segmentation.benchmark import add_arguments, forward_flops, run
from transfer.segmentation.model import build_upernet


def test_forward_flops_count_attention() -> None:
    model = build_upernet("vit_tiny", 8, channels=16, aux_channels=8, depth=2, embed_dim=64, num_heads=2, img_size=64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        plain = FlopCountAnalysis(model.eval(), (torch.zeros(1, 3, 64, 64),))
        plain.unsupported_ops_warnings(False)
        without_attention = plain.total()
    # 64 px -> 4 x 4 patches + cls = 17 tokens, 2 heads of width 32, both blocks run (taps 0, 0, 0, 1):
    # QK^T and AV per block = heads * n * n * (d + d) = 2 * 17 * 17 * 64 multiply-adds.
    attention = 2 * (2 * 17 * 17 * 64)
    assert forward_flops(model, 64) == 2.0 * (without_attention + attention)


def test_run_writes_rows(tmp_path) -> None:
    import argparse

    p = argparse.ArgumentParser()
    for flag, default in (("--device", "cpu"), ("--precision", "auto"), ("--out", str(tmp_path / "seg.json"))):
        p.add_argument(flag, default=default)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--iters", type=int, default=1)
    add_arguments(p)
    rows = run(p.parse_args(["--archs", "vit_tiny", "--size", "64", "--batch-size", "2", "--channels", "64", "--no-flops"]))
    assert rows[0]["arch"] == "vit_tiny" and rows[0]["it/s"] > 0 and rows[0]["head_ch"] == 64
    saved = json.loads((tmp_path / "seg.json").read_text())
    assert saved["rows"][0]["batch"] == 2 and saved["suite"] == "seg"
