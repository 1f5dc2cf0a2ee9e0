"""One policy for run folders: never overwrite another run silently, never resume the wrong one."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.checkpoint import find_resume_checkpoint
from engine.config import ConfigError

__all__ = ["prepare_run_dir", "config_differences", "RUN_MARKERS"]

_log = logging.getLogger("target_ssl")

# Files that say a folder holds a run.
RUN_MARKERS = ("config.json", "last.pth", "metrics.jsonl", "final_metrics.json")


def _holds_run(run_dir: Path) -> bool:
    if not run_dir.is_dir():
        return False
    return any((run_dir / m).exists() for m in RUN_MARKERS) or any(run_dir.glob("checkpoint_*.pth"))


def prepare_run_dir(run_dir: str | Path, resume: str | None, overwrite: bool = False) -> Path | None:
    """Check ``run_dir`` before anything is built; returns the checkpoint to resume from (or None).

    A folder that holds another run is refused unless the user resumes it (``--resume auto``) or
    starts over (``--overwrite``, which deletes that run's files and says which). Nothing is created.
    """
    run_dir = Path(run_dir)
    if overwrite and resume:
        raise ConfigError("--overwrite starts the run over and --resume continues it; pass only one")
    if overwrite and _holds_run(run_dir):
        _delete_run(run_dir)
    path = find_resume_checkpoint(resume, run_dir)
    if path is None and _holds_run(run_dir):
        raise ConfigError(
            f"{run_dir} already holds a run (its {', '.join(m for m in RUN_MARKERS if (run_dir / m).exists())}); "
            "continue it with --resume auto, start over with --overwrite (deletes it), or choose another "
            "--output-dir"
        )
    return path


def _delete_run(run_dir: Path) -> None:
    doomed = sorted(p for p in run_dir.iterdir())
    _log.warning("--overwrite: deleting the earlier run in %s: %s", run_dir, ", ".join(p.name for p in doomed))
    for p in doomed:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(saved: dict, requested: dict, ignore: Iterable[str] = ()) -> list[str]:
    """``"key: saved -> requested"`` for every dotted key that differs, except those in ``ignore``
    (a key or a section prefix)."""
    a, b = _flatten(saved), _flatten(requested)
    skip = tuple(ignore)

    def ignored(key: str) -> bool:
        return any(key == i or key.startswith(i + ".") for i in skip)

    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if not ignored(k) and a.get(k) != b.get(k)]
