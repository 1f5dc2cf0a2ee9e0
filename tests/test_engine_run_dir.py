"""engine.run_dir.prepare_run_dir: the output-directory policy (issue 11 case 1, read-only dir)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from engine.checkpoint import CheckpointManager
from engine.config import ConfigError
from engine.run_dir import RunDirError, config_differences, prepare_run_dir

CFG = {"run": {"output_dir": "a", "resume": None, "seed": 0}, "optim": {"lr": 0.001, "betas": [0.9, 0.99]},
       "schedule": {"epochs": 10}}


def _old_run(run_dir: Path, config: dict = CFG) -> None:
    manager = CheckpointManager(run_dir)
    manager.save({"model": {"w": torch.ones(2)}, "step": 5, "config": config}, 5)
    (run_dir / "config.json").write_text("{}")
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    (run_dir / "tb").mkdir()
    (run_dir / "tb" / "events").write_text("x")


def test_fresh_dir_is_not_created(tmp_path: Path) -> None:
    run_dir = tmp_path / "new" / "run"
    assert prepare_run_dir(run_dir, None, False, CFG) is None
    assert prepare_run_dir(run_dir, "auto", False, CFG) is None
    assert not run_dir.exists() and not (tmp_path / "new").exists()


def test_reused_dir_is_refused_naming_both_ways(tmp_path: Path) -> None:
    _old_run(tmp_path)
    with pytest.raises(RunDirError, match=r"already holds a run.*--resume auto.*--overwrite") as info:
        prepare_run_dir(tmp_path, None, False, CFG)
    assert isinstance(info.value, ConfigError)
    assert (tmp_path / "checkpoint_00000005.pth").exists()  # nothing touched
    with pytest.raises(RunDirError, match="contradict"):
        prepare_run_dir(tmp_path, "auto", True, CFG)


def test_overwrite_deletes_the_run_and_says_so(tmp_path: Path, ssl_log) -> None:
    _old_run(tmp_path)
    (tmp_path / "my_notes.txt").write_text("keep me")
    assert prepare_run_dir(tmp_path, None, True, CFG) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_notes.txt"]
    for name in ("checkpoint_00000005.pth", "last.pth", "metrics.jsonl", "config.json", "tb"):
        assert f"deleting {tmp_path / name}" in ssl_log.text
    assert "my_notes.txt" in ssl_log.text  # what was left is listed


def test_resume_auto_accepts_run_length_and_output_changes(tmp_path: Path) -> None:
    _old_run(tmp_path)
    longer = {**CFG, "schedule": {"epochs": 20}, "run": {**CFG["run"], "output_dir": "b", "resume": "auto"}}
    assert prepare_run_dir(tmp_path, "auto", False, longer) == tmp_path / "checkpoint_00000005.pth"


def test_resume_auto_refuses_another_config_naming_the_keys(tmp_path: Path) -> None:
    _old_run(tmp_path)
    other = {**CFG, "optim": {"lr": 0.01, "betas": [0.9, 0.99]}, "run": {**CFG["run"], "seed": 1}}
    with pytest.raises(RunDirError, match=r"2 key\(s\)[\s\S]*optim\.lr: checkpoint 0\.001, requested 0\.01"
                                          r"[\s\S]*run\.seed") as info:
        prepare_run_dir(tmp_path, "auto", False, other)
    assert "schedule.epochs" not in str(info.value)
    # the ignorable keys are a parameter
    assert prepare_run_dir(tmp_path, "auto", False, other, ignore=("optim.*", "run.*")) is not None


def test_config_differences_reports_missing_keys() -> None:
    diffs = config_differences({"a": {"x": 1}}, {"a": {"x": 1, "y": 2}, "b": 3}, ignore=("b",))
    assert diffs == [("a.y", "<absent>", 2)]


def test_read_only_output_dir_is_refused(tmp_path: Path, monkeypatch) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0:  # root writes anywhere: make access() answer as for a normal user
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
    try:
        with pytest.raises(RunDirError, match=r"ro is not writable.*another --output-dir"):
            prepare_run_dir(ro / "run", None, False, CFG)
    finally:
        ro.chmod(0o700)


def test_output_dir_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is not a directory"):
        prepare_run_dir(tmp_path / "file" / "run", None, False, CFG)


def test_tools_take_overwrite(tmp_path: Path) -> None:
    from transfer.cli import TransferCLI
    from transfer.segmentation.config import SegConfig

    repo = Path(__file__).resolve().parents[1]
    cli = TransferCLI(description="", config_type=SegConfig, config_dirs=[repo / "seg_configs"], model_name="m",
                      data_root_help="", set_example="", train=dict, evaluate=dict, summarize=dict)
    args = cli.parse_args(["--config", "upernet_splitmask_vits_ade20k.py", "--overwrite"])
    assert cli.build_config(args).run.overwrite is True
    args = cli.parse_args(["--config", "upernet_splitmask_vits_ade20k.py"])
    assert cli.build_config(args).run.overwrite is False


def test_pretrain_tool_takes_overwrite() -> None:
    import importlib.util

    repo = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("pretrain_cli_overwrite", repo / "tools" / "pretrain.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.config_from_args(tool.build_parser().parse_args(["--overwrite"])).run.overwrite is True
    assert tool.config_from_args(tool.build_parser().parse_args([])).run.overwrite is False
