"""Console entry points: every [project.scripts] target imports from the package (no checkout paths)
and its --help runs in-process."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
# A flag each command's help must show: proof that the right parser answered.
FLAGS = {
    "target-ssl-pretrain": "--config",
    "target-ssl-train-det": "--eval-only",
    "target-ssl-train-seg": "--eval-only",
    "target-ssl-demo": "--tiny",
    "target-ssl-benchmark": "{pretrain,det,seg,",  # more suites follow (data, eval, all, ...)
    "target-ssl-train-cls": "--eval-only",
    "target-ssl-probe": "--weights",
    "target-ssl-check-data": "--data-root",
    "target-ssl-make-shards": "--per-shard",
    "target-ssl-submit": "--gpus-per-node",
}


def test_every_tool_has_a_command() -> None:
    assert set(SCRIPTS) == set(FLAGS)
    assert {p.stem for p in (REPO / "tools").glob("*.py")} == {"pretrain", "train_det", "train_seg", "demo", "benchmark", "train_cls",
                                                                   "probe", "check_data", "make_shards", "submit"}


@pytest.mark.parametrize("script", sorted(FLAGS))
def test_entry_function_help(script: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    module_name, func_name = SCRIPTS[script].split(":")
    assert not module_name.startswith("tools")
    entry = getattr(importlib.import_module(module_name), func_name)
    monkeypatch.setattr(sys, "argv", [script, "--help"])  # a console script reads sys.argv
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {script}") and FLAGS[script] in out


def test_entry_returns_none_so_the_script_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    import target_ssl.benchmark as bench

    calls = []
    monkeypatch.setattr(bench, "main", lambda argv=None: calls.append(argv) or {"result": 1})
    assert bench.entry() is None and calls == [None]


def test_pretrain_help_lists_the_shipped_configs_folder(capsys: pytest.CaptureFixture[str]) -> None:
    from pretrain.cli import CONFIG_DIRS

    assert (CONFIG_DIRS[-1] / "splitmask_coco_vitb.py").is_file()  # found through the package, not cwd
