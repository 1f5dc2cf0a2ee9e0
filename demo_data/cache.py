"""Demo-set cache: generate once into a temp folder, rename into place, keyed by a ``DONE`` marker."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from demo_data.ade import generate_ade
from demo_data.coco import generate_coco
from demo_data.drawing import GENERATOR_VERSION

MARKER_NAME = "DONE"
# A config's data root with this value names the built-in demo set; the dataset builders resolve it
# (generating the set on first use), so loading a config never generates data. A folder that is
# literally called "demo" is written "./demo".
DEMO_ROOT = "demo"


def demo_root() -> Path:
    """Folder that holds the demo datasets: ``$TARGET_SSL_CACHE/demo`` (default ``~/.cache/target_ssl``)."""
    return Path(os.environ.get("TARGET_SSL_CACHE", "~/.cache/target_ssl")).expanduser() / "demo"


def _marker(**params: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, **params}


def _is_complete(folder: Path, marker: dict) -> bool:
    try:
        return json.loads((folder / MARKER_NAME).read_text()) == marker
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive file lock so concurrent processes (torchrun ranks, test workers) generate once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the atomic rename still keeps readers safe
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ensure(root: Path | None, name: str, marker: dict, generate: Callable[[Path], None]) -> Path:
    """Return <root>/<name>, generating it into a temp folder and renaming it in place if needed."""
    root = demo_root() if root is None else Path(root).expanduser()
    final = root / name
    if _is_complete(final, marker):
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(
            f"cannot create the demo data folder {root} ({e}); pass a writable root "
            "(--root DIR) or set TARGET_SSL_CACHE to a writable folder"
        ) from e
    with _lock(root / f".{name}.lock"):
        if _is_complete(final, marker):  # another process finished it while we waited
            return final
        tmp = root / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            generate(tmp)
            (tmp / MARKER_NAME).write_text(json.dumps(marker, sort_keys=True))
            if final.exists():  # stale: old version, other parameters, or incomplete
                old = root / f".{name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                final.rename(old)
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _check_counts(num_train: int, num_val: int) -> None:
    if num_train < 1 or num_val < 1:
        raise ValueError(
            f"demo datasets need at least one image per split, got num_train={num_train}, num_val={num_val}"
        )


def ensure_demo_coco(root: Path | None = None, num_train: int = 96, num_val: int = 24, seed: int = 0) -> Path:
    """Generate (once) the COCO-layout demo set and return its folder ``<root>/demo_coco``.

    The folder holds ``train2017/``, ``val2017/`` (``<image_id:012d>.jpg``) and
    ``annotations/instances_{train,val}2017.json``. root defaults to :func:`demo_root`. It is
    regenerated when its ``DONE`` marker is missing or records another generator version, seed
    or image counts (so use separate roots for differently sized sets used side by side).
    """
    _check_counts(num_train, num_val)
    marker = _marker(seed=seed, num_train=num_train, num_val=num_val)
    return _ensure(root, "demo_coco", marker, lambda out: generate_coco(out, num_train, num_val, seed))


def ensure_demo_ade(root: Path | None = None, num_train: int = 96, num_val: int = 24, seed: int = 0) -> Path:
    """Generate (once) the ADE20k-layout demo set and return ``<root>/demo_ade/ADEChallengeData2016``.

    That folder holds ``images/{training,validation}/ADE_{train,val}_NNNNNNNN.jpg``, the matching
    ``annotations/.../*.png`` (uint8, 0 = other/ignore, i = ``DEMO_ADE_CLASSES[i - 1]``) and
    ``classes.txt`` (one class name per line). Regeneration rules as :func:`ensure_demo_coco`.
    """
    _check_counts(num_train, num_val)
    marker = _marker(seed=seed, num_train=num_train, num_val=num_val)
    out = _ensure(root, "demo_ade", marker, lambda out: generate_ade(out, num_train, num_val, seed))
    return out / "ADEChallengeData2016"
