"""Every cls_configs/ file loads as a ClsConfig; the Table 9 recipes carry the paper's numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import load_config
from transfer.classification.config import DATASETS, ClsConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "cls_configs").glob("[!_]*.py"))  # not __init__.py

# Table 9: (lr, layer decay, warmup epochs, repeated augmentation, RandAugment magnitude)
TABLE9 = {
    **{d: (1.4e-4, None, 5, True, "m7") for d in ("inat18", "inat19", "food101")},
    **{d: (4e-3, 0.65, 60, False, "m9") for d in ("cars", "clipart", "painting", "sketch")},
}
# Table 3: training images and classes
TABLE3 = {"inat18": (437_513, 8_142), "inat19": (265_240, 1_010), "food101": (75_750, 101), "cars": (8_144, 196),
          "clipart": (34_019, 345), "painting": (52_867, 345), "sketch": (49_115, 345)}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, ClsConfig)
    if path.name.startswith("demo"):
        assert cfg.data.root == "demo"  # resolved when the data is read: loading generates nothing
    if path.name.startswith("finetune_"):
        ds = cfg.data.dataset
        lr, ld, warmup, repeated, magnitude = TABLE9[ds]
        random_init = "random_init" in path.name
        assert cfg.optim.lr == lr and cfg.solver.warmup_epochs == warmup and cfg.aug.repeated_aug == repeated
        assert cfg.optim.layer_decay == (None if random_init else ld)
        assert magnitude in cfg.aug.rand_augment and "mstd0.5" in cfg.aug.rand_augment
        assert (cfg.solver.epochs, cfg.solver.batch_size, cfg.optim.weight_decay) == (300, 1024, 0.05)
        assert (cfg.aug.mixup, cfg.aug.cutmix, cfg.aug.label_smoothing, cfg.model.drop_path) == (0.8, 1.0, 0.1, 0.1)
        assert cfg.aug.test_crop_ratio == 0.875 and cfg.data.img_size == 224
        assert cfg.model.arch == ("vit_small" if path.stem.endswith("vits") else "vit_base")


def test_presets_have_the_paper_sizes() -> None:
    assert {k: (p.num_train, p.num_classes) for k, p in DATASETS.items()} == TABLE3
    assert len([p for p in CONFIGS if p.name.startswith("finetune_")]) == 4 * len(DATASETS)


def test_demo_track_runs_share_everything_but_the_init(tmp_path: Path) -> None:
    from transfer.classification.track import demo_config

    a = demo_config("finetune", "enc.safetensors", tmp_path / "a", seed=2, budget=12, device="cpu")
    b = demo_config("finetune", None, tmp_path / "b", seed=2, budget=12, device="cpu")
    assert a.model.weights == "enc.safetensors" and b.model.weights is None
    assert (a.solver.epochs, a.solver.warmup_epochs, a.eval.every_epochs, a.run.seed) == (12, 2, 12, 2)
    assert a.optim.layer_decay == 0.65 and b.optim.layer_decay is None  # scratch rows: no layer decay
    strip = {"model": None, "run": None, "optim": None}
    assert {**vars(a), **strip} == {**vars(b), **strip}
    assert demo_config("linear", None, tmp_path / "c", 0, 12, "cpu").mode == "linear"
