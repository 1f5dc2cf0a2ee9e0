"""Tracebacks turned into messages (issue 11 case 9): an unknown --arch, a --config lookup that
listed one path several times."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import ConfigError, load_config
from ssl_backbones import create_vit

REPO = Path(__file__).resolve().parents[1]


def test_unknown_arch_is_a_config_error_listing_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown architecture 'vit_bogus'.*vit_tiny, vit_small, vit_base"):
        create_vit("vit_bogus")


@pytest.mark.slow
def test_pretrain_tool_reports_an_unknown_arch_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    cmd = [sys.executable, str(REPO / "tools" / "pretrain.py"), "--arch", "vit_bogus", "--data", "folder",
           "--data-root", str(tmp_path / "imgs"), "--output-dir", str(tmp_path / "run"), "--device", "cpu",
           "--batch-size", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1
    assert "error: unknown architecture 'vit_bogus'" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_config_lists_each_candidate_once(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "a.py").write_text("config = None\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("nope", search_dirs=["cfgs", tmp_path / "cfgs", "cfgs/"])
    looked = str(info.value).split("looked for: ")[1].split(".\n")[0].split(", ")
    assert looked == ["nope", "nope.py", "cfgs/nope", "cfgs/nope.py"]
    assert str(info.value).count("a.py") == 1  # the available configs once, too
