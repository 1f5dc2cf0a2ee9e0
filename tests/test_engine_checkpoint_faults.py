"""Checkpoint faults (issue 11 cases 6, 7, 9): corrupt newest checkpoint, truncated / missing
--resume file, random bytes named .pth, stale temp files of killed saves."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
import torch

from engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    LegacyPickleError,
    checkpoint_problem,
    find_resume_checkpoint,
    load_checkpoint,
)
from engine.config import ConfigError


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((4,), float(step))}, "step": step}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_auto_falls_back_past_a_corrupt_newest_checkpoint(tmp_path: Path, ssl_log) -> None:
    manager = CheckpointManager(tmp_path, keep_last=3)
    for step in (10, 20, 30):
        manager.save(_state(step), step)
    _truncate(tmp_path / "checkpoint_00000030.pth")
    path = find_resume_checkpoint("auto", tmp_path)
    assert path == tmp_path / "checkpoint_00000020.pth"
    assert load_checkpoint(path)["step"] == 20
    assert "checkpoint_00000030.pth" in ssl_log.text and "truncated" in ssl_log.text
    for name in ("checkpoint_00000010.pth", "checkpoint_00000020.pth", "last.pth"):
        (tmp_path / name).write_bytes(b"\0" * 100)
    with pytest.raises(CheckpointError, match="every checkpoint .* is damaged.*--overwrite"):
        find_resume_checkpoint("auto", tmp_path)


def test_auto_picks_a_newer_interrupted_checkpoint(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    manager.save(_state(10), 10)
    old = time.time() - 60
    os.utime(tmp_path / "checkpoint_00000010.pth", (old, old))
    manager.save_named(_state(15), "interrupted")
    assert find_resume_checkpoint("auto", tmp_path) == tmp_path / "interrupted.pth"
    manager.save(_state(20), 20)  # a later numbered one wins again
    assert find_resume_checkpoint("auto", tmp_path) == tmp_path / "checkpoint_00000020.pth"


def test_missing_and_truncated_resume_files_are_config_errors(tmp_path: Path) -> None:
    CheckpointManager(tmp_path).save(_state(10), 10)
    with pytest.raises(CheckpointError, match=r"nope\.pth' does not exist.*checkpoint_00000010\.pth") as info:
        find_resume_checkpoint(str(tmp_path / "nope.pth"), tmp_path)
    assert isinstance(info.value, ConfigError)  # the tools print it, no traceback
    cut = tmp_path / "cut.pth"
    cut.write_bytes((tmp_path / "checkpoint_00000010.pth").read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"cut\.pth' is truncated or corrupt"):
        find_resume_checkpoint(str(cut), tmp_path)
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)


def test_random_bytes_are_not_reported_as_a_pickle(tmp_path: Path) -> None:
    junk = tmp_path / "model.pth"
    junk.write_bytes(os.urandom(4096).replace(b"PK", b"QK"))
    assert "not a torch checkpoint" in checkpoint_problem(junk)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(junk, allow_pickle=True)
    assert not isinstance(info.value, LegacyPickleError)
    assert "not a torch checkpoint" in str(info.value) and "--allow-pickle" not in str(info.value)
    other_zip = tmp_path / "other.pth"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_checkpoint(other_zip)


def test_a_pickle_with_objects_still_asks_for_allow_pickle(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"model": {}, "args": {1, 2}, "cls": CheckpointManager}, path)  # a class: a global
    with pytest.raises(LegacyPickleError, match="--allow-pickle"):
        load_checkpoint(path)


def test_stale_temp_files_are_removed_on_open(tmp_path: Path) -> None:
    stale = tmp_path / ".checkpoint_00000010.pth.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    keep = [tmp_path / "notes.tmp", tmp_path / "checkpoint_00000005.pth"]
    for p in keep:
        p.write_bytes(b"y")
    CheckpointManager(tmp_path)
    assert not stale.exists() and all(p.exists() for p in keep)
