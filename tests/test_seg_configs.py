"""The shipped seg_configs: the reference recipe's values, composition by import, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import ConfigError, apply_overrides, load_config
from transfer.segmentation.config import SegConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "seg_configs"
NAMES = [f"upernet_{m}_{a}_ade20k.py" for m in ("splitmask", "beit", "mae", "random_init") for a in ("vits", "vitb")]


def load(name: str) -> SegConfig:
    cfg = load_config(name, search_dirs=[CONFIG_DIR])
    assert isinstance(cfg, SegConfig)
    return cfg


def test_splitmask_vitb_is_the_beit_ade20k_recipe() -> None:
    cfg = load("upernet_splitmask_vitb_ade20k")
    assert (cfg.model.arch, cfg.model.channels, cfg.model.aux_channels, cfg.model.aux_weight) == ("vit_base", 768, 256, 0.4)
    assert cfg.model.drop_path == 0.1 and cfg.model.weights is None
    assert (cfg.data.crop_size, cfg.data.scale, cfg.data.ratio_range) == ((512, 512), (2048, 512), (0.5, 2.0))
    assert cfg.data.cat_max_ratio == 0.75 and cfg.data.num_classes == 150 and cfg.data.reduce_zero_label
    o = cfg.optim
    assert (o.lr, o.weight_decay, o.layer_decay, o.schedule, o.poly_power, o.warmup_steps) == (7e-4, 0.05, 0.65, "poly", 1.0, 1500)
    assert o.final_lr_ratio == 0.0
    assert (cfg.solver.iterations, cfg.solver.batch_size) == (160_000, 16)
    assert (cfg.eval.mode, cfg.eval.crop, cfg.eval.stride) == ("slide", (512, 512), (341, 341))
    assert "45.7" in (CONFIG_DIR / "upernet_splitmask_vitb_ade20k.py").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_every_config_loads_with_its_own_output_dir(name: str) -> None:
    cfg = load(name)
    assert cfg.model.arch == ("vit_small" if "_vits_" in name else "vit_base")
    assert cfg.model.channels == (512 if "_vits_" in name else 768)
    assert cfg.model.layer_scale == (0.1 if "_beit_" in name else None)  # BEiT encoders have layer scale
    assert cfg.run.output_dir.endswith(name.removeprefix("upernet_").removesuffix(".py"))
    assert cfg.optim.layer_decay == (None if "random_init" in name else 0.65)


def test_demo_config_and_overrides() -> None:
    cfg = load("demo_upernet_vit_tiny.py")
    assert cfg.model.arch == "vit_tiny" and cfg.data.crop_size == (128, 128)
    assert cfg.data.root == "demo"  # resolved to the generated set when the dataset is built
    cfg2 = apply_overrides(cfg, ["optim.lr=5e-4", "eval.mode=whole", "data.crop_size=(96,96)", "model.weights=x.pth"])
    assert (cfg2.optim.lr, cfg2.eval.mode, cfg2.data.crop_size, cfg2.model.weights) == (5e-4, "whole", (96, 96), "x.pth")
    with pytest.raises(ConfigError, match="aux_weight"):
        apply_overrides(cfg, ["model.aux_wieght=0.2"])
    with pytest.raises(ConfigError, match="slide"):
        apply_overrides(cfg, ["eval.mode=sliding"])
