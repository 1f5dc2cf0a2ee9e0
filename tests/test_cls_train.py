"""Classification end to end on tiny demo data: fine-tuning on the shared trainer (files, exact
resume, encoder export), --eval-only, and the frozen probes by block through tools/train_cls.py."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from demo_data import ensure_demo_cls
from engine.checkpoint import load_checkpoint
from ssl_backbones import load_exported_encoder
from transfer.classification.config import (
    AugConfig,
    ClsConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SolverConfig,
)
from transfer.classification.loop import train

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.depth=2", "model.embed_dim=64", "model.num_heads=2", "data.img_size=32", "data.num_workers=0"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_demo_cls(tmp_path_factory.mktemp("cls_data"), train_per_class=8, val_per_class=3, side=40)


def tiny_config(root: Path, out: Path) -> ClsConfig:
    # 48 images, 3 repeats, batch 8: 6 steps per epoch, 2 epochs; mixup + cutmix + RandAugment on.
    return ClsConfig(
        model=ModelConfig(arch="vit_tiny", depth=2, embed_dim=64, num_heads=2, drop_path=0.1, pool="mean"),
        data=DataConfig(root=str(root), img_size=32, num_workers=0),
        aug=AugConfig(repeated_aug=True, mixup=0.8, cutmix=1.0),
        optim=OptimConfig(lr=1e-3, weight_decay=0.05, layer_decay=0.65, schedule="cosine"),
        solver=SolverConfig(epochs=2, warmup_epochs=1, batch_size=8, lr_reference_batch=None),
        eval=EvalConfig(every_epochs=1, batch_size=18),
        run=RunConfig(output_dir=str(out), device="cpu", log_every=1, ckpt_every_steps=4, keep_last=0, seed=3),
    )


@pytest.fixture(scope="module")
def run_a(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ClsConfig, dict]:
    cfg = tiny_config(demo, tmp_path_factory.mktemp("cls_a"))
    return cfg, train(cfg)


def test_finetune_writes_metrics_checkpoints_and_encoder(run_a) -> None:
    cfg, result = run_a
    out = Path(cfg.run.output_dir)
    assert result["step"] == result["total_steps"] == 12 and result["task"] == "classification"
    per_class = json.loads((out / "eval_results.json").read_text())
    accs = [c["acc"] for c in per_class["classes"]]
    assert len(accs) == 6 and per_class["num_images"] == 18
    assert result["mean_class_acc"] == pytest.approx(sum(accs) / 6)
    assert result["top1"] == pytest.approx(sum(accs) / 6)  # 3 images per class: top-1 = mean class acc
    assert result["top5"] >= result["top1"]
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val/top1" in r] == [6, 12]
    assert json.loads((out / "config.json").read_text())["optim"]["warmup_steps"] == 6  # resolved from epochs
    encoder = load_exported_encoder(out / "encoder.safetensors")
    model = load_checkpoint(out / "last.pth")["model"]
    for k, v in encoder.state_dict().items():
        if k != "pos_embed":
            assert torch.equal(v, model[f"encoder.{k}"]), k


def test_finetune_resumes_exactly(run_a, tmp_path: Path) -> None:
    cfg, result = run_a
    out_b = tmp_path / "cls_b"
    out_b.mkdir()
    shutil.copy(Path(cfg.run.output_dir) / "checkpoint_00000008.pth", out_b)
    cfg_b = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, output_dir=str(out_b), resume="auto"))
    result_b = train(cfg_b)
    a = load_checkpoint(Path(cfg.run.output_dir) / "last.pth")
    b = load_checkpoint(out_b / "last.pth")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["task"] == b["task"] == {"mixup_calls": 12}
    assert result_b["top1"] == pytest.approx(result["top1"])

    def losses(run: Path) -> list[float]:
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r and r["step"] > 8]

    assert losses(Path(cfg.run.output_dir)) == losses(out_b)


def _tool(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "tools/train_cls.py", "--config", "demo_cls_vit_tiny.py", "--device", "cpu", *args]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_eval_only_reproduces_the_final_metrics(run_a, demo: Path, tmp_path: Path) -> None:
    cfg, result = run_a
    _tool("--eval-only", "--weights", str(Path(cfg.run.output_dir) / "last.pth"), "--data-root", str(demo),
          "--output-dir", str(tmp_path / "eval"), "--set", *TINY, "model.pool=mean")
    metrics = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(result["top1"]) and metrics["top5"] == pytest.approx(result["top5"])


@pytest.mark.parametrize("mode", ["knn", "linear"])
def test_probe_by_block_through_the_tool(run_a, demo: Path, tmp_path: Path, mode: str) -> None:
    cfg, _ = run_a
    encoder = Path(cfg.run.output_dir) / "encoder.safetensors"
    out = tmp_path / mode
    proc = _tool("--mode", mode, "--weights", str(encoder), "--data-root", str(demo), "--output-dir", str(out),
                 "--set", *TINY, "probe.all_blocks=true", "probe.warmup_epochs=1", "probe.epochs=5",
                 "probe.batch_size=16")
    result = json.loads((out / "final_metrics.json").read_text())
    assert list(result["top1_by_block"]) == ["0", "1"]  # one accuracy per block
    assert result["mode"] == mode and result["num_train"] == 48
    assert (out / "probe_by_block.png").stat().st_size > 0
    rows = json.loads((out / "probe_results.json").read_text())["blocks"]
    assert [r["top1"] for r in rows] == list(result["top1_by_block"].values())
    assert '"top1_by_block"' in proc.stdout


def test_bad_layout_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    cmd = [sys.executable, "tools/train_cls.py", "--config", "demo_cls_vit_tiny.py", "--device", "cpu",
           "--data-root", str(tmp_path), "--output-dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert f"missing folder {tmp_path / 'train'}" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.distributed
def test_two_process_finetune_reports_the_metrics_of_its_checkpoint(demo: Path, tmp_path: Path) -> None:
    # Sharded evaluation (counts summed over processes) scores rank 0's model: the 2-process
    # run's final top-1 equals a single-process evaluation of its last.pth.
    sets = [*TINY, "aug.repeated_aug=true", "solver.warmup_epochs=0", "solver.epochs=1", "solver.batch_size=8",
            "eval.batch_size=5"]
    base = ["tools/train_cls.py", "--config", "demo_cls_vit_tiny.py", "--device", "cpu", "--data-root", str(demo)]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
         *base, "--output-dir", str(tmp_path / "ddp"), "--set", *sets],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    trained = json.loads((tmp_path / "ddp" / "final_metrics.json").read_text())
    assert trained["num_images"] == 18 and trained["step"] == 6  # 3 x 48 copies: 24 per rank, 4 per step
    _tool("--eval-only", "--weights", str(tmp_path / "ddp" / "last.pth"), "--data-root", str(demo),
          "--output-dir", str(tmp_path / "eval"), "--set", *TINY, "eval.batch_size=7")
    evaluated = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert evaluated["top1"] == pytest.approx(trained["top1"]) and evaluated["top5"] == pytest.approx(trained["top5"])
