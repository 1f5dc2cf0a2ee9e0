"""`benchmark all` (the GPU check) end to end on CPU with --quick: every section runs, the one JSON
holds each suite's rows and the real run stopped by its timer's SIGUSR1 with a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine.benchmarking import peak_tflops


@pytest.mark.slow
def test_gpu_check_quick_on_cpu(tmp_path: Path, demo_coco: Path) -> None:
    from target_ssl.benchmark import SUITES, main

    out = tmp_path / "all.json"
    main(["all", "--device", "cpu", "--quick", "--out", str(out), "--workdir", str(tmp_path / "run")])
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert list(sections) == ["pretrain", "det", "seg", "eval", "data", "real_run"]
    assert not [name for name, s in sections.items() if "error" in s], sections
    pre = sections["pretrain"]["rows"]
    assert [r["method"] for r in pre] == ["splitmask", "beit", "mae", "dino"]
    assert all(r["img/s"] > 0 and r["GFLOP/step"] > 0 and r["MFU"] is None for r in pre)  # no peak on a CPU
    assert [r["attention"] for r in sections["det"]["rows"]] == ["global", "window"]
    assert sections["seg"]["rows"][0]["peak_mem_MiB"] > 0
    assert all(r["equal"] for r in sections["eval"]["rows"] if r.get("backend"))
    assert ("rows" in sections["data"]) == ("data" in SUITES)  # the hook for the data suite
    run = sections["real_run"]["result"]
    assert run["stopped_by_signal"] and run["checkpoint"] and run["logged_steps"] >= 1 and run["images_per_s"] > 0


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H200", 989.0),
                                        ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA GeForce RTX 2080", None)])
def test_peak_tflops_by_gpu_name(monkeypatch: pytest.MonkeyPatch, name: str, peak: float | None) -> None:
    # MFU's denominator: dense bf16 peak by device name (H100 / H200 SXM 989, A100 312).
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert peak_tflops(torch.device("cuda", 0), "bf16") == peak
    assert peak_tflops(torch.device("cpu"), "bf16") is None
