"""Config folders are packages: loading a shipped file imports it under its dotted name, composes by
ordinary imports and leaves sys.path and sys.modules as a plain import would."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from engine.config import load_config

REPO = Path(__file__).resolve().parents[1]


def test_shipped_configs_load_as_package_modules() -> None:
    path_before = list(sys.path)
    cfg = load_config("mask_rcnn_random_init_vits_6x.py", [REPO / "det_configs"])
    assert sys.path == path_before
    module = sys.modules["det_configs.mask_rcnn_random_init_vits_6x"]
    assert module.config is cfg and Path(module.__file__) == REPO / "det_configs" / "mask_rcnn_random_init_vits_6x.py"
    # Composition by import: its base is a module of the same package, still importable afterwards.
    base = importlib.import_module("det_configs.mask_rcnn_random_init_vits_3x").config
    assert base.solver.epochs * 2 == cfg.solver.epochs == 72
    seg = load_config("upernet_mae_vits_ade20k", [REPO / "seg_configs"])
    assert sys.modules["seg_configs.upernet_mae_vits_ade20k"].config is seg


def test_a_loose_folder_named_like_a_package_runs_by_path(tmp_path: Path) -> None:
    folder = tmp_path / "det_configs"  # not the shipped package: its own sibling imports must work
    folder.mkdir()
    (folder / "base.py").write_text("from engine.config import RunConfig\nconfig = RunConfig(seed=7)\n")
    (folder / "top.py").write_text("import dataclasses\nfrom base import config as b\nconfig = dataclasses.replace(b, seed=b.seed + 1)\n")
    assert load_config(folder / "top.py").seed == 8
    assert "base" not in sys.modules  # the bare-name sibling does not shadow anything afterwards
