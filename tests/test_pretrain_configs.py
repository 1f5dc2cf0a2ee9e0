"""The shipped pretrain_configs: each file's recipe against DESIGN.md section 4, composition by
import, and tools/pretrain.py --config with its flags as overrides."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from engine.config import load_config
from pretrain.config import PAPER_EPOCHS, PretrainConfig, default_config

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "pretrain_configs"
FILES = sorted(p.name for p in CONFIG_DIR.glob("[!_]*.py"))
BEIT_BLR = 1.5e-3 * 256 / 2048  # BEiT: lr 1.5e-3 at batch 2048, scaled linearly (4.4)


def load(name: str) -> PretrainConfig:
    cfg = load_config(name, [CONFIG_DIR])
    assert isinstance(cfg, PretrainConfig), name
    return cfg


def test_the_expected_files_ship() -> None:
    expected = {f"{m}_{t}_vitb.py" for m in ("splitmask", "beit", "mae") for t in ("coco", "ade20k")}
    expected |= {"splitmask_coco_vits.py", "splitmask_ade20k_vits.py", "demo_splitmask_vit_tiny.py"}
    assert expected <= set(FILES)


@pytest.mark.parametrize("name", [f for f in FILES if not f.startswith(("demo_", "dino_"))])  # dino: test_pretrain_dino
def test_every_paper_config_has_its_recipe(name: str) -> None:
    cfg = load(name)
    method, target, size = name.removesuffix(".py").split("_")
    assert (cfg.model.method, cfg.data.name) == (method, target)
    assert cfg.model.arch == {"vitb": "vit_base", "vits": "vit_small"}[size]
    assert cfg.run.output_dir == f"runs/pretrain_{method}_{target}_{size}"
    # Constant updates (Table 3): COCO / LVIS 3,000 epochs, ADE20k 21,000.
    assert cfg.schedule.epochs == {"coco": 3000, "lvis": 3000, "ade20k": 21000}[target] == PAPER_EPOCHS[target]
    # Drop path 0.1 (BEiT, SplitMask); MAE trains without.
    assert cfg.data.img_size == 224 and cfg.model.patch_size == 16
    assert cfg.model.drop_path == (0.0 if method == "mae" else 0.1)
    assert cfg.data.augment == ("ade20k" if target == "ade20k" else "auto")  # ADE20k: max 25% crop
    o = cfg.optim
    assert (o.weight_decay, o.schedule) == (0.05, "cosine")
    if method == "mae":  # MAE: AdamW (0.9, 0.95), blr 1.5e-4, no clipping, 512 x 8 decoder, 75% masked
        assert (o.betas, o.clip_grad, cfg.schedule.blr) == ((0.9, 0.95), None, 1.5e-4)
        assert (cfg.model.mae_decoder_dim, cfg.model.mae_decoder_depth, cfg.model.mae_mask_ratio) == (512, 8, 0.75)
        assert cfg.model.norm_pix_loss
    else:  # BEiT's optimisation for BEiT and SplitMask
        assert (o.betas, o.clip_grad) == ((0.9, 0.999), 3.0)
        assert cfg.schedule.blr == pytest.approx(BEIT_BLR)
        assert (cfg.tokenizer.kind, cfg.tokenizer.vocab_size, cfg.tokenizer.patch_size) == ("random_projection", 8192, 8)
    if method == "beit":
        assert cfg.model.layer_scale == 0.1
    if method == "splitmask":
        assert (cfg.model.decoder_depth, cfg.model.tau, cfg.model.use_contrastive) == (2, 0.2, True)


def test_paper_configs_agree_with_default_config() -> None:
    """The files and default_config (the no --config path) describe the same optimisation."""
    for name, method in (("splitmask_coco_vitb.py", "splitmask"), ("mae_coco_vitb.py", "mae")):
        cfg, ref = load(name), default_config(method, "coco")
        assert (cfg.optim, cfg.schedule.blr, cfg.model.tau) == (ref.optim, ref.schedule.blr, ref.model.tau)


def test_demo_config_is_the_demo_recipe() -> None:
    cfg = load("demo_splitmask_vit_tiny.py")
    assert (cfg.data.name, cfg.data.root, cfg.data.img_size, cfg.model.arch) == ("demo", None, 128, "vit_tiny")
    assert (cfg.schedule.batch_size, cfg.schedule.blr, cfg.schedule.epochs) == (16, 4e-3, 20)


def _tool():
    spec = importlib.util.spec_from_file_location("pretrain_tool", REPO / "tools" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_flag_with_shortcuts_and_set() -> None:
    tool = _tool()
    args = tool.build_parser().parse_args(
        ["--config", "splitmask_ade20k_vitb.py", "--arch", "vit_small", "--data-root", "/ade", "--epochs", "auto",
         "--batch-size", "32", "--set", "model.tau=0.1"]
    )  # fmt: skip
    cfg = tool.config_from_args(args)
    base = load("splitmask_ade20k_vitb.py")
    assert (cfg.model.arch, cfg.data.root, cfg.schedule.epochs, cfg.schedule.batch_size) == ("vit_small", "/ade", None, 32)
    assert cfg.model.tau == 0.1 and base.model.tau == 0.2  # the file's object is not mutated
    # Flags that were not given keep the file's values.
    assert (cfg.data.name, cfg.data.augment, cfg.optim, cfg.run.output_dir) == (
        "ade20k", "ade20k", base.optim, "runs/pretrain_splitmask_ade20k_vitb",
    )
    with pytest.raises(SystemExit, match="not found"):
        tool.main(["--config", "splitmask_nowhere.py"])
