"""The pretraining loop: derived schedule numbers, exact resume, the command-line tool end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.config import apply_overrides
from engine.guards import NonFiniteLossError
from pretrain.config import default_config, resolve_epochs
from pretrain.loop import make_plan, train
from ssl_backbones import load_encoder_weights
from ssl_backbones.vit import create_vit

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model.arch=vit_tiny",
    "model.embed_dim=64",
    "model.depth=2",
    "model.num_heads=2",
    "model.mae_decoder_dim=32",
    "model.mae_decoder_depth=1",
    "model.mae_decoder_heads=2",
    "data.img_size=32",
    "data.max_images=16",
    "data.num_workers=0",
    "schedule.batch_size=4",
    "schedule.epochs=2",
    "schedule.blr=0.01",
    "run.log_every=1",
    "run.ckpt_every_steps=100",
]


def test_epochs_rule_and_lr_scaling() -> None:
    assert resolve_epochs("coco", 118_287, None) == 3000
    assert resolve_epochs("lvis", 100_170, None) == 3000
    assert resolve_epochs("ade20k", 20_210, None) == 21000
    assert resolve_epochs("folder", 437_513, None) == round(300 * 1_281_167 / 437_513)  # ~ iNat18's 800
    assert resolve_epochs("demo", 96, None) == 5000  # capped
    assert resolve_epochs("coco", 118_287, 7) == 7
    cfg = apply_overrides(default_config("beit", "coco"), ["schedule.batch_size=64", "schedule.accum_iter=2"])
    plan = make_plan(cfg, num_images=1000, world_size=2)
    assert plan.steps_per_epoch == 1000 // 2 // 64 // 2
    assert plan.total_batch == 256 and plan.lr == pytest.approx(1.5e-3 / 2048 * 256)
    assert plan.epochs == 3000 and plan.warmup_steps == round(100 * plan.steps_per_epoch)


def _state(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.mark.slow
def test_resume_continues_bit_for_bit(tmp_path: Path) -> None:
    # Gradient accumulation, drop path (global RNG), block masks and a data-dependent tokenizer:
    # everything a resume has to restore.
    extra = [
        "schedule.accum_iter=2",
        "tokenizer.kind=random_patches",
        "tokenizer.vocab_size=32",
        "tokenizer.num_samples=64",
    ]
    base = apply_overrides(default_config("splitmask", "demo"), TINY + extra)
    full = train(apply_overrides(base, [f"run.output_dir={tmp_path / 'full'}"]))
    part_dir = tmp_path / "part"
    stopped = train(apply_overrides(base, [f"run.output_dir={part_dir}", "schedule.stop_at_step=1"]))
    assert stopped["step"] == 1 and stopped["encoder"] is None
    # Resume mid-epoch, with a data-loader worker this time: samples depend only on (seed, epoch, index).
    resumed = train(
        apply_overrides(base, [f"run.output_dir={part_dir}", "run.resume=auto", "data.num_workers=1"])
    )
    assert resumed["step"] == full["step"] == make_plan(base, 16, 1).total_steps

    a, b = _state(full["checkpoint"]), _state(resumed["checkpoint"])
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pid, st in a["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], b["optimizer"]["state"][pid]["exp_avg"])

    def losses(run: Path) -> dict[int, float]:
        return {
            r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        }

    assert losses(tmp_path / "full") == losses(part_dir)


@pytest.mark.slow
def test_tool_end_to_end_writes_checkpoint_and_loadable_encoder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable, str(REPO / "tools" / "pretrain.py"),
        "--data", "demo", "--method", "splitmask", "--arch", "vit_tiny", "--epochs", "1",
        "--img-size", "64", "--batch-size", "32", "--blr", "1e-3", "--num-workers", "0", "--output-dir", str(out),
        "--set", "model.depth=2", "tokenizer.vocab_size=1024",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = _state(out / "last.pth")
    assert ckpt["step"] == 3 and ckpt["meta"]["method"] == "splitmask" and ckpt["meta"]["img_size"] == 64
    assert ckpt["model"]["tokenizer.vocab"].shape == (1024, 192)
    meta = json.loads((out / "encoder.json").read_text())
    assert meta["dataset"] == "demo" and meta["depth"] == 2
    for source in (out / "encoder.safetensors", out / "last.pth"):
        enc = create_vit("vit_tiny", depth=2, img_size=64)
        report = load_encoder_weights(enc, source, strict=True)
        assert report.loaded
        for k, v in enc.state_dict().items():
            assert torch.equal(v, ckpt["model"][f"encoder.{k}"]), k
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["schedule"]["epochs"] == 1 and cfg["optim"]["lr"] == pytest.approx(1e-3 * 32 / 256)


def _load_tool():
    spec = importlib.util.spec_from_file_location("pretrain_cli", REPO / "tools" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_flags_and_overrides_build_the_config() -> None:
    tool = _load_tool()
    args = tool.build_parser().parse_args(
        ["--data", "coco", "--data-root", "/data/coco", "--method", "mae", "--arch", "vit_base", "--epochs", "auto",
         "--batch-size", "128", "--accum-iter", "2", "--blr", "2e-4", "--tokenizer", "kmeans", "--resume", "auto",
         "--ckpt-every", "500", "--init", "mae.pth", "--set", "optim.weight_decay=0.1", "model.drop_path=0.2"]
    )  # fmt: skip
    cfg = tool.config_from_args(args)
    assert (cfg.data.name, cfg.data.root, cfg.model.method, cfg.model.arch) == (
        "coco",
        "/data/coco",
        "mae",
        "vit_base",
    )
    assert cfg.schedule.epochs is None and cfg.schedule.batch_size == 128 and cfg.schedule.accum_iter == 2
    assert cfg.schedule.blr == 2e-4 and cfg.tokenizer.kind == "kmeans" and cfg.model.init == "mae.pth"
    assert cfg.run.resume == "auto" and cfg.run.ckpt_every_steps == 500
    assert cfg.optim.weight_decay == 0.1 and cfg.model.drop_path == 0.2
    assert cfg.optim.betas == (0.9, 0.95)  # MAE's reference betas
    assert cfg.run.output_dir == "runs/pretrain_mae_vit_base_coco"
    demo = tool.config_from_args(tool.build_parser().parse_args(["--data", "demo", "--epochs", "2"]))
    assert demo.data.img_size == 128 and demo.schedule.epochs == 2
    with pytest.raises(SystemExit):
        tool.build_parser().parse_args(["--epochs", "many"])


def test_tool_rejects_unknown_keys_with_the_valid_ones() -> None:
    with pytest.raises(SystemExit) as err:
        _load_tool().main(["--set", "model.nope=1"])
    assert "unknown config key 'model.nope'" in str(err.value.code) and "decoder_depth" in str(err.value.code)


def test_non_finite_loss_stops_with_a_checkpoint(tmp_path: Path) -> None:
    cfg = apply_overrides(
        default_config("splitmask", "demo"),
        TINY + ["data.max_images=4", "model.contrastive_weight=inf", f"run.output_dir={tmp_path}"],
    )
    with pytest.raises(NonFiniteLossError, match="loss is inf at step 0") as err:
        train(cfg)
    saved = _state(tmp_path / "nonfinite.pth")
    assert saved["step"] == 0 and "nonfinite.pth" in str(err.value)
    assert all(torch.isfinite(v).all() for k, v in saved["model"].items() if v.is_floating_point())


def test_an_explicit_set_wins_over_the_derived_lr_and_warmup() -> None:
    # The NaN message recommends --set optim.lr=... optim.warmup_steps=...: they must take effect.
    tool = _load_tool()
    base = ["--data", "demo", "--epochs", "30", "--batch-size", "16"]
    derived = make_plan(tool.config_from_args(tool.build_parser().parse_args(base)), 96, 1)
    assert derived.lr == pytest.approx(4e-3 * 16 / 256) and derived.warmup_steps == 6  # blr and epochs / 30
    args = tool.build_parser().parse_args(base + ["--set", "optim.lr=2e-5", "optim.warmup_steps=17"])
    plan = make_plan(tool.config_from_args(args), 96, 1)
    assert (plan.lr, plan.warmup_steps) == (2e-5, 17)
    no_warmup = tool.build_parser().parse_args(base + ["--set", "optim.warmup_steps=0"])
    assert make_plan(tool.config_from_args(no_warmup), 96, 1).warmup_steps == 0
    with_blr = tool.build_parser().parse_args(base + ["--blr", "1e-3", "--set", "optim.lr=2e-5"])
    assert make_plan(tool.config_from_args(with_blr), 96, 1).lr == pytest.approx(1e-3 * 16 / 256)  # --blr given too
