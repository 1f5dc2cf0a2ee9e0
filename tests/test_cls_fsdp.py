"""Classification fine-tuning with FSDP2 (tools/train_cls.py --set run.parallel=fsdp, 2 gloo
processes) against the same run under DDP: the same losses, the same final evaluation (on
validation shards of unequal size, which a sharded forward could not run), a sharded checkpoint,
and the exported fine-tuned encoder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from demo_data import ensure_demo_cls

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.depth=2", "model.embed_dim=64", "model.num_heads=2", "data.img_size=32", "data.num_workers=0"]
# 17 validation images over 2 processes in batches of 4: 3 batches on rank 0, 2 on rank 1.
SETS = [*TINY, "solver.warmup_epochs=0", "solver.epochs=1", "solver.batch_size=8", "eval.batch_size=4",
        "eval.max_images=17", "run.log_every=1"]  # fmt: skip


def _train(demo: Path, out: Path, port: int, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "tools/train_cls.py", "--config", "demo_cls_vit_tiny.py", "--device", "cpu", "--data-root", str(demo),
           "--output-dir", str(out), "--set", *SETS, *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "final_metrics.json").read_text())


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_finetune_equals_ddp(tmp_path: Path) -> None:
    demo = ensure_demo_cls(tmp_path / "data", train_per_class=8, val_per_class=3, side=40)
    ddp = _train(demo, tmp_path / "ddp", 29685)
    fsdp = _train(demo, tmp_path / "fsdp", 29686, "run.parallel=fsdp")
    assert len(_losses(tmp_path / "ddp")) == ddp["step"] > 1
    assert _losses(tmp_path / "fsdp") == pytest.approx(_losses(tmp_path / "ddp"), rel=1e-5)
    assert fsdp["num_images"] == ddp["num_images"] == 17
    assert fsdp["top1"] == pytest.approx(ddp["top1"]) and fsdp["top5"] == pytest.approx(ddp["top5"])
    assert Path(fsdp["checkpoint"]).name.endswith(".dcp") and Path(fsdp["checkpoint"]).is_dir()
    from safetensors.torch import load_file  # noqa: PLC0415

    a, b = load_file(tmp_path / "ddp" / "encoder.safetensors"), load_file(tmp_path / "fsdp" / "encoder.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # 3% of one AdamW step (lr 1e-3 x layer decay at most 1)
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=3e-5, msg=k)
