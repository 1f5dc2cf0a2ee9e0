"""End to end on the demo ADE20k-layout data: train(cfg) with periodic evaluation, the files a run
writes, --eval-only on its checkpoint, and an exact resume from a mid-run checkpoint."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint
from transfer.segmentation.config import (
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SegConfig,
    SolverConfig,
)
from transfer.segmentation.loop import train

pytestmark = pytest.mark.slow

ITERS = 12
REPO = Path(__file__).resolve().parents[1]


def tiny_config(root: Path, out: Path) -> SegConfig:
    return SegConfig(
        model=ModelConfig(arch="vit_tiny", depth=2, embed_dim=64, num_heads=2, channels=32, aux_channels=16,
                          drop_path=0.1),
        data=DataConfig(root=str(root), crop_size=(64, 64), scale=(256, 64), num_workers=0),
        optim=OptimConfig(lr=1e-3, weight_decay=0.05, layer_decay=0.65, schedule="poly", warmup_steps=2,
                          warmup_start=0.1),
        solver=SolverConfig(iterations=ITERS, batch_size=4),
        eval=EvalConfig(mode="slide", crop=(64, 64), stride=(42, 42), every=6, max_images=6),
        run=RunConfig(output_dir=str(out), device="cpu", precision="auto", log_every=1, ckpt_every_steps=4,
                      keep_last=0, seed=3),
    )


@pytest.fixture(scope="module")
def run_a(demo_ade: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[SegConfig, dict]:
    cfg = tiny_config(demo_ade, tmp_path_factory.mktemp("seg_a"))
    return cfg, train(cfg)


def test_train_writes_metrics_and_checkpoints(run_a) -> None:
    cfg, result = run_a
    out = Path(cfg.run.output_dir)
    assert result["step"] == ITERS
    iou = np.array([np.nan if v is None else v for v in result["IoU"]], dtype=float)
    assert len(iou) == 8 and result["mIoU"] == pytest.approx(float(np.nanmean(iou)))
    assert 0.0 <= result["mIoU"] <= 100.0 and 0.0 < result["aAcc"] <= 100.0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "loss" in r]
    assert train_steps == list(range(1, ITERS + 1))  # one loss record per iteration
    assert all(math.isfinite(r["loss"]) and "loss_aux" in r for r in records if "loss" in r)
    assert [r["step"] for r in records if "val/mIoU" in r] == [6, ITERS]
    for name in ("config.json", "config.py", "last.pth", "best.pth", "eval_results.json", "final_metrics.json",
                 "checkpoint_00000004.pth", "checkpoint_00000008.pth", "log.txt"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    per_class = json.loads((out / "eval_results.json").read_text())
    assert per_class["mIoU"] == pytest.approx(result["mIoU"], abs=1e-3)
    assert [c["name"] for c in per_class["classes"]][:2] == ["sky", "building"]
    best = load_checkpoint(out / "best.pth")
    assert best["best"]["mIoU"] == pytest.approx(result["best_mIoU"])


def test_eval_only_cli_reproduces_the_final_metrics(run_a, tmp_path: Path) -> None:
    # The user's command: the config is found by name under seg_configs/, --set reshapes it.
    cfg, result = run_a
    overrides = [
        "model.depth=2", "model.embed_dim=64", "model.num_heads=2", "model.channels=32", "model.aux_channels=16",
        f"data.root={cfg.data.root}", "data.scale=(256,64)", "data.num_workers=0",
        "eval.crop=(64,64)", "eval.stride=(42,42)", "eval.max_images=6",
    ]
    cmd = [sys.executable, "tools/train_seg.py", "--config", "demo_upernet_vit_tiny.py", "--eval-only",
           "--weights", str(Path(cfg.run.output_dir) / "last.pth"), "--output-dir", str(tmp_path / "eval"),
           "--device", "cpu", "--set", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert metrics["mIoU"] == pytest.approx(result["mIoU"])
    assert metrics["num_images"] == 6
    assert '"mIoU"' in proc.stdout and (tmp_path / "eval" / "eval_results.json").is_file()


def test_resume_continues_exactly(run_a, tmp_path: Path) -> None:
    cfg, result = run_a
    out_b = tmp_path / "seg_b"
    out_b.mkdir()
    shutil.copy(Path(cfg.run.output_dir) / "checkpoint_00000008.pth", out_b)
    cfg_b = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, output_dir=str(out_b), resume="auto"))
    result_b = train(cfg_b)
    a = load_checkpoint(Path(cfg.run.output_dir) / "last.pth")["model"]
    b = load_checkpoint(out_b / "last.pth")["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert result_b["mIoU"] == pytest.approx(result["mIoU"])
    losses_a = [json.loads(x) for x in (Path(cfg.run.output_dir) / "metrics.jsonl").read_text().splitlines()]
    losses_b = [json.loads(x) for x in (out_b / "metrics.jsonl").read_text().splitlines()]
    tail_a = [r["loss"] for r in losses_a if "loss" in r and r["step"] > 8]
    tail_b = [r["loss"] for r in losses_b if "loss" in r]
    assert tail_a == tail_b


def test_nonfinite_loss_stops_with_a_checkpoint(demo_ade: Path, tmp_path: Path, monkeypatch) -> None:
    import transfer.segmentation.model as model_mod
    from engine.guards import NonFiniteLossError

    real_loss = model_mod.segmentation_loss
    calls = {"n": 0}

    def loss_nan_from_step_2(logits, labels, ignore_index=255):
        calls["n"] += 1  # two calls per step (decode + auxiliary head)
        loss = real_loss(logits, labels, ignore_index)
        return loss * float("nan") if calls["n"] > 4 else loss

    monkeypatch.setattr(model_mod, "segmentation_loss", loss_nan_from_step_2)
    cfg = tiny_config(demo_ade, tmp_path / "nan")
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        train(cfg)
    state = load_checkpoint(tmp_path / "nan" / "nonfinite.pth")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


FORK_AFTER_CV2_POOL = """
import dataclasses, sys
import cv2, numpy as np
sys.path.insert(0, {tests!r})
from test_seg_train import tiny_config
from transfer.segmentation.loop import train
from pathlib import Path

# Use OpenCV's thread pool in this process first, as the demo's data generation does.
image = np.random.default_rng(0).random((1500, 1500, 3), dtype=np.float32)
for _ in range(3):
    cv2.GaussianBlur(cv2.resize(image, (2000, 2000)), (15, 15), 3)
cfg = tiny_config(Path({root!r}), Path({out!r}))
cfg = dataclasses.replace(
    cfg,
    data=dataclasses.replace(cfg.data, num_workers=1),
    solver=dataclasses.replace(cfg.solver, iterations=2),
    optim=dataclasses.replace(cfg.optim, warmup_steps=0),
    eval=dataclasses.replace(cfg.eval, every=2, max_images=2),
)
print("step", train(cfg)["step"])
"""


def test_workers_do_not_deadlock_after_the_parent_used_opencv_threads(demo_ade: Path, tmp_path: Path) -> None:
    # Regression: forked DataLoader workers hung in cv2.setNumThreads once the parent had used
    # OpenCV's pool (tools/demo.py generating its data, then training UperNet with workers).
    script = FORK_AFTER_CV2_POOL.format(tests=str(REPO / "tests"), root=str(demo_ade), out=str(tmp_path / "run"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "step 2" in done.stdout


@pytest.mark.distributed
def test_two_process_run_reports_the_metrics_of_its_checkpoint(demo_ade: Path, tmp_path: Path) -> None:
    # Under gloo BatchNorm is not synchronised, so each process's running statistics follow its
    # own batches. Evaluation must still score rank 0's model (the one the checkpoint holds):
    # the 2-process run's final mIoU equals a single-process evaluation of its last.pth.
    overrides = [
        "model.depth=2", "model.embed_dim=64", "model.num_heads=2", "model.channels=32", "model.aux_channels=16",
        f"data.root={demo_ade}", "data.scale=(256,64)", "data.crop_size=(64,64)", "data.num_workers=0",
        "eval.crop=(64,64)", "eval.stride=(42,42)", "eval.max_images=6", "eval.every=4",
        "solver.iterations=4", "solver.batch_size=4", "optim.warmup_steps=0", "run.ckpt_every_steps=4",
    ]
    base = ["tools/train_seg.py", "--config", "demo_upernet_vit_tiny.py", "--device", "cpu"]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
         *base, "--output-dir", str(tmp_path / "ddp"), "--set", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    trained = json.loads((tmp_path / "ddp" / "final_metrics.json").read_text())
    single = subprocess.run(
        [sys.executable, *base, "--eval-only", "--weights", str(tmp_path / "ddp" / "last.pth"),
         "--output-dir", str(tmp_path / "eval"), "--set", *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval_metrics.json").read_text())
    assert evaluated["mIoU"] == pytest.approx(trained["mIoU"], abs=1e-9)
    assert evaluated["aAcc"] == pytest.approx(trained["aAcc"], abs=1e-9)
