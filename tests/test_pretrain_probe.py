"""The health probe while pretraining (`--probe-every`): when it runs, what it logs, that its numbers
are the probe's own on the same weights, and that it needs the tools layer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import ConfigError, apply_overrides
from engine.plots import read_metrics
from pretrain.config import default_config
from pretrain.loop import train
from ssl_backbones import load_exported_encoder
from target_ssl.pretrain import main as pretrain_main
from target_ssl.probe_monitor import ProbeMonitor, probe_data_kind
from tests.test_pretrain_loop import TINY
from transfer.probe_data import build_probe_set
from transfer.probing import run_probe

PROBE = ["probe.every_epochs=2", "probe.max_train=8", "probe.max_val=4", "probe.taps=(0,1)"]


def test_probe_data_follows_the_pretraining_source() -> None:
    for source, kind in (("ade20k", "ade20k"), ("coco", "coco"), ("demo", "demo_coco"), ("folder", "folder")):
        assert probe_data_kind(apply_overrides(default_config("splitmask", source), [])) == kind
    explicit = apply_overrides(default_config("splitmask", "coco"), ["probe.data=demo_ade"])
    assert probe_data_kind(explicit) == "demo_ade"


def test_probe_without_a_monitor_is_an_error_that_names_the_command(tmp_path: Path) -> None:
    cfg = apply_overrides(default_config("splitmask", "demo"), TINY + PROBE + [f"run.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="target-ssl-pretrain"):
        train(cfg)
    with pytest.raises(ConfigError, match="every_epochs must be >= 0"):
        apply_overrides(cfg, ["probe.every_epochs=-1"])


@pytest.mark.slow
def test_probe_runs_every_n_epochs_and_at_the_end_with_the_probes_numbers(demo_coco: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # 16 images / batch 4 = 4 updates an epoch; 3 epochs; probe every 2 epochs -> steps 8 and 12 (the end).
    argv = ["--config", "demo_splitmask_vit_tiny.py", "--output-dir", str(out), "--probe-every", "2",
            "--set", *TINY, "schedule.epochs=3", *PROBE[1:]]
    result = pretrain_main(argv)
    records = [r for r in read_metrics(out / "metrics.jsonl") if "val/probe/miou/block1" in r]
    assert [r["step"] for r in records] == [8, 12]
    for r in records:  # the encoder's and the random twin's scores and ranks at both taps
        assert {f"val/{w}/{m}/block{t}" for w in ("probe", "probe_random") for m in ("miou", "erank_raw")
                for t in (0, 1)} <= set(r)
    assert records[0]["val/probe/feature_norm/block1"] != records[1]["val/probe/feature_norm/block1"]  # trained
    assert records[0]["val/probe_random/miou/block1"] == records[1]["val/probe_random/miou/block1"]
    # The last record is the probe of the exported encoder, computed independently here.
    cfg = json.loads((out / "config.json").read_text())
    probe_set = build_probe_set("demo_coco", None, cfg["data"]["img_size"], 8, 4)
    again = run_probe(load_exported_encoder(result["encoder"]), probe_set, (0, 1), "cpu", cfg["run"]["seed"])
    for key, value in again.items():
        assert records[-1][f"val/{key}"] == pytest.approx(value, rel=1e-5, abs=1e-6)
    assert result["probe/miou/block1"] == pytest.approx(again["probe/miou/block1"], rel=1e-5)
    assert (out / "probe_curve.png").stat().st_size > 0


def test_monitor_checks_the_probe_size_against_the_patch() -> None:
    cfg = apply_overrides(default_config("splitmask", "demo"), ["probe.every_epochs=1", "probe.img_size=40"])
    with pytest.raises(ConfigError, match="multiple of the patch size 16"):
        ProbeMonitor(cfg)
