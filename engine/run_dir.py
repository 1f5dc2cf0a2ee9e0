"""One policy for output directories, the same in every tool.

:func:`prepare_run_dir` runs before anything is written (no folder, log or config file is created
by it) and decides what a run may do with its output directory:

- a fresh or empty directory: start;
- a directory that already holds a run (``config.json``, ``metrics.jsonl``, ``checkpoint_*.pth``,
  ``last.pth``) and neither flag: refused, naming both ways forward (``--resume auto`` to continue
  it, ``--overwrite`` to start over);
- ``--overwrite``: the earlier run's files are deleted, each one logged; files a run does not write
  are left where they are (and listed);
- ``--resume auto`` / ``--resume PATH``: the checkpoint's stored config (``"config"``, from
  ``config_to_dict``) must equal the requested one except for the run length and the output folder
  (:data:`RESUME_IGNORED_KEYS`); otherwise refused, naming the differing keys.

Call it on every rank before the data is read (under DDP only rank 0 deletes; put a barrier after
it), then create the directory.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from engine.checkpoint import STATE_FILE, find_resume_checkpoint, load_checkpoint
from engine.config import ConfigError
from engine.distributed import get_rank

__all__ = ["RunDirError", "RESUME_IGNORED_KEYS", "RUN_MARKERS", "config_differences", "prepare_run_dir"]

_log = logging.getLogger("target_ssl")

# Files whose presence means "a run lives here".
RUN_MARKERS = ("config.json", "metrics.jsonl", "checkpoint_*.pth", "checkpoint_*.dcp", "last.pth")
# What runs write, so what --overwrite deletes (files and folders); anything else is kept.
RUN_FILES = RUN_MARKERS + (
    "config.py", "*.pth", "*.dcp", "encoder*.safetensors", "encoder*.json", "final_metrics.json", "metrics.json",
    "eval_results.json", "eval_metrics.json", "log.txt", "tb", "eval", ".*.tmp",
)
# Dotted config keys (fnmatch patterns) that may differ on resume: run length, output folder, and
# how the resume itself was asked for.
RESUME_IGNORED_KEYS = (
    "run.output_dir", "run.resume", "run.allow_pickle", "run.overwrite",
    # How the run is laid out in memory, not what it computes: a sharded checkpoint may continue
    # under DDP and the other way round.
    "run.parallel", "run.activation_checkpointing", "run.compile",
    "schedule.epochs", "schedule.stop_at_step", "schedule.max_iters", "solver.iterations",
)


class RunDirError(ConfigError):
    """The output directory cannot be used as asked (holds another run, differs, read-only)."""


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _run_files(run_dir: Path, patterns: Iterable[str]) -> list[Path]:
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if _matches(p.name, patterns))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(
    stored: Mapping[str, Any], requested: Mapping[str, Any], ignore: Iterable[str] = RESUME_IGNORED_KEYS
) -> list[tuple[str, Any, Any]]:
    """(dotted key, stored value, requested value) for every leaf that differs, ignored keys
    (fnmatch patterns over dotted keys) left out; a key missing on one side shows ``<absent>``."""
    a, b = _flatten(stored), _flatten(requested)
    ignore = tuple(ignore)
    absent = "<absent>"
    return [
        (k, a.get(k, absent), b.get(k, absent))
        for k in sorted(set(a) | set(b))
        if not _matches(k, ignore) and a.get(k, absent) != b.get(k, absent)
    ]


def _check_writable(run_dir: Path) -> None:
    """Refuse a directory (or, for a new one, its nearest existing parent) that cannot be written."""
    probe = run_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not (probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)):
        what = "is not a directory" if not probe.is_dir() else "is not writable"
        raise RunDirError(
            f"output directory {run_dir}: {probe} {what}; choose another --output-dir "
            "(or fix the permissions)"
        )


def _stored_config(path: Path, allow_pickle: bool) -> dict | None:
    if path.is_dir():  # a sharded checkpoint: the config is in its side file
        path = path / STATE_FILE
    try:  # memory-mapped: reads the small "config" entry without pulling in every tensor
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - legacy formats: the checked loader gives the right error
        state = load_checkpoint(path, allow_pickle=allow_pickle)
    if not isinstance(state, dict):
        return None
    # The config the user asked for (what a resume request is compared with); older checkpoints
    # only hold the resolved one.
    return state.get("requested_config", state.get("config"))


def _check_resume_config(path: Path, config: Mapping[str, Any], ignore: Iterable[str], allow_pickle: bool) -> None:
    stored = _stored_config(path, allow_pickle)
    if stored is None:
        _log.warning("%s stores no config; cannot check that it matches the requested one", path)
        return
    diffs = config_differences(stored, config, ignore)
    if diffs:
        lines = "\n  ".join(f"{k}: checkpoint {a!r}, requested {b!r}" for k, a, b in diffs[:20])
        more = f"\n  ... and {len(diffs) - 20} more" if len(diffs) > 20 else ""
        raise RunDirError(
            f"cannot resume from {path}: its config differs from the requested one in {len(diffs)} "
            f"key(s):\n  {lines}{more}\nResume with the same settings (only the run length and the "
            "output folder may change), or start a new run with another --output-dir or --overwrite."
        )


def _delete_run(run_dir: Path) -> None:
    doomed = _run_files(run_dir, RUN_FILES)
    for p in doomed:
        _log.warning("--overwrite: deleting %s", p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
    kept = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    if kept:
        _log.warning("--overwrite: left in %s (not written by a run): %s", run_dir, ", ".join(kept[:10]))


def prepare_run_dir(
    run_dir: str | os.PathLike,
    resume: str | os.PathLike | None,
    overwrite: bool,
    config: Mapping[str, Any],
    ignore: Iterable[str] = RESUME_IGNORED_KEYS,
    allow_pickle: bool = False,
) -> Path | None:
    """Apply the run-directory policy (module doc) and return the checkpoint to resume from.

    Args:
        run_dir: the output directory (need not exist; it is not created).
        resume: None, ``"auto"`` or a checkpoint path (``--resume``).
        overwrite: ``--overwrite``: delete an earlier run's files first.
        config: the requested config as ``config_to_dict(cfg)``.
        ignore: dotted keys (fnmatch patterns) allowed to differ from the checkpoint's config.
        allow_pickle: passed to the checkpoint loader for legacy files.

    Returns:
        The checkpoint to resume from, or None for a fresh start.

    Raises:
        RunDirError: the directory holds a run and neither flag was given, both flags were given,
            the checkpoint's config differs, or the directory cannot be written.
        CheckpointError: the resume checkpoint is missing or damaged.
    """
    run_dir = Path(run_dir)
    resume = None if resume in (None, "") else str(resume)
    if resume is not None and overwrite:
        raise RunDirError("--resume and --overwrite contradict each other: continue the run, or start it over")
    _check_writable(run_dir)
    existing = _run_files(run_dir, RUN_MARKERS)
    if existing and resume is None and not overwrite:
        names = ", ".join(p.name for p in existing[:5]) + (" ..." if len(existing) > 5 else "")
        raise RunDirError(
            f"output directory {run_dir} already holds a run ({names}). Continue it with "
            "--resume auto, start it over with --overwrite (deletes that run's files), or choose "
            "another --output-dir."
        )
    if overwrite:
        if existing and get_rank() == 0:
            _delete_run(run_dir)
        return None
    path = find_resume_checkpoint(resume, run_dir)
    if path is not None:
        _check_resume_config(path, config, ignore, allow_pickle)
    elif existing:
        # Killed before its first checkpoint: nothing to continue; the logger's resume_step=0
        # empties the old metrics.jsonl.
        _log.warning("%s holds a run but no checkpoint yet: starting it from the beginning", run_dir)
    return path
