"""End to end on the demo data with a tiny ViT: train -> evaluate -> checkpoints -> exact resume ->
`tools/train_det.py --eval-only`; plus the config files and the schedule in steps."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from engine.config import ConfigError, apply_overrides, load_config
from transfer.detection.config import DetConfig
from transfer.detection.loop import step_schedule, train

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "det_configs"


def _load_tool():
    spec = importlib.util.spec_from_file_location("train_det_tool", REPO / "tools" / "train_det.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_cfg(demo_coco: Path, out: Path) -> DetConfig:
    cfg = load_config("demo_mask_rcnn_vit_tiny.py", [CONFIGS])
    return apply_overrides(cfg, [
        f"data.root={demo_coco}", f"run.output_dir={out}",
        "model.embed_dim=64", "model.depth=2", "model.num_heads=2",
        "model.fpn_channels=32", "model.box_head_dim=64", "model.mask_head_channels=32",
        "data.train_sizes=(96,128)", "data.crop_pre_sizes=(96,)", "data.crop_size=(64,96)", "data.max_size=192",
        "data.test_size=96", "data.test_max_size=160", "data.num_workers=0",
        "solver.batch_size=2", "solver.max_iters=4", "optim.warmup_steps=1",
        "eval.max_images=4", "run.log_every=1", "run.ckpt_every_steps=2", "run.device=cpu",
    ])


@pytest.mark.slow
def test_train_evaluate_resume_and_eval_only(demo_coco: Path, tmp_path: Path) -> None:
    cfg = _tiny_cfg(demo_coco, tmp_path / "a")
    result = train(cfg)
    run = tmp_path / "a"

    # Final metrics: AP in percent, written to final_metrics.json and eval/final_metrics.json.
    saved = json.loads((run / "final_metrics.json").read_text())
    for t in ("bbox", "segm"):
        for k in ("AP", "AP50", "AP75"):
            assert 0.0 <= saved[f"{t}_{k}"] <= 100.0
            assert saved[f"{t}_{k}"] == pytest.approx(result[f"{t}_{k}"])
    assert result["step"] == 4 and saved["num_images"] == 4
    results_json = json.loads((run / "eval" / "final_results.json").read_text())
    assert isinstance(results_json, list)
    # Per-iteration losses for loss curves, and the resolved config.
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [x for x in lines if "loss" in x]
    assert [x["step"] for x in train_lines] == [1, 2, 3, 4]
    assert all(x["loss"] > 0 and "loss_mask" in x and "lr" in x for x in train_lines)
    assert any("val/bbox_AP" in x for x in lines)
    assert json.loads((run / "config.json").read_text())["solver"]["max_iters"] == 4
    for name in ("checkpoint_00000002.pth", "checkpoint_00000004.pth", "last.pth", "best.pth"):
        assert (run / name).is_file(), name

    # Exact resume: continue from the mid-epoch step-2 checkpoint in a fresh directory.
    resumed = dataclasses.replace(
        cfg, run=dataclasses.replace(cfg.run, output_dir=str(tmp_path / "b"), resume=str(run / "checkpoint_00000002.pth"))
    )
    train(resumed)
    a = torch.load(run / "last.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pth", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k

    # --eval-only on the trained detector, with the run's own saved config, gives the same numbers.
    tool = _load_tool()
    metrics = tool.main(["--config", str(run / "config.py"), "--eval-only", "--weights", str(run / "last.pth"),
                         "--output-dir", str(tmp_path / "c")])
    for k in ("bbox_AP", "segm_AP", "bbox_AP50"):
        assert metrics[k] == pytest.approx(result[k])
    assert (tmp_path / "c" / "eval" / "eval_results.json").is_file()


def test_eval_only_rejects_an_encoder_checkpoint(demo_coco: Path, tmp_path: Path) -> None:
    from ssl_backbones.vit import create_vit
    from transfer.detection.loop import evaluate

    enc = tmp_path / "enc.pth"
    torch.save({"model": create_vit("vit_tiny", embed_dim=64, depth=2, num_heads=2).state_dict()}, enc)
    cfg = _tiny_cfg(demo_coco, tmp_path / "e")
    with pytest.raises(ValueError, match="no Mask R-CNN weights"):
        evaluate(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, checkpoint=str(enc))))


def test_schedule_in_steps() -> None:
    cfg = DetConfig()  # 36 epochs, x0.1 at 27 and 33, warmup 500
    assert step_schedule(cfg, 7330) == (36 * 7330, [27 * 7330, 33 * 7330], 500)
    short = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, max_iters=360))
    assert step_schedule(short, 100) == (360, [270, 330], 359)  # milestones keep their fraction
    # Overrides may set epochs and milestones in any order; the pair is checked at the start.
    bad = apply_overrides(cfg, ["solver.epochs=12"])
    with pytest.raises(ConfigError, match="milestones"):
        step_schedule(bad, 100)


def test_every_config_file_builds() -> None:
    files = sorted(CONFIGS.glob("[!_]*.py"))  # __init__.py makes the folder a package
    assert len(files) >= 15
    for f in files:
        cfg = load_config(f.name, [CONFIGS])
        assert isinstance(cfg, DetConfig), f.name
    lvis = load_config("lvis_mask_rcnn_splitmask_vitb_3x.py", [CONFIGS])
    assert lvis.data.kind == "lvis" and lvis.data.repeat_factor_threshold == 0.001
    assert (lvis.eval.detections_per_image, lvis.eval.score_threshold) == (300, 0.02)
    six = load_config("mask_rcnn_random_init_vits_6x.py", [CONFIGS])
    assert six.solver.epochs == 72 and six.model.weights is None
    lsj = load_config("mask_rcnn_mae_vitb_lsj_100ep.py", [CONFIGS])
    assert (lsj.model.adapter, lsj.data.policy, lsj.optim.layer_decay, lsj.solver.epochs) == ("simple_fpn", "lsj", 0.7, 100)
    # The command line: --set and the shortcut flags land in the config.
    tool = _load_tool()
    args = tool.parse_args(["--config", "mask_rcnn_splitmask_vits_3x.py", "--weights", "w.safetensors",
                            "--data-root", "/data/coco", "--set", "optim.lr=2e-4", "solver.milestones=(9,11)",
                            "solver.epochs=12", "--resume"])
    cfg = tool.build_config(args)
    assert (cfg.model.weights, cfg.data.root, cfg.optim.lr, cfg.solver.epochs, cfg.run.resume) == (
        "w.safetensors", "/data/coco", 2e-4, 12, "auto")
