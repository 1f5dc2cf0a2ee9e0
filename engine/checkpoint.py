"""Training checkpoints that survive crashes and resume exactly.

State-dict convention (every loop uses these keys; extra keys are allowed)::

    {"model": ..., "optimizer": ..., "scaler": ..., "step": int, "epoch": int,
     "rng": capture_rng_state(), "sampler": {...} or "data": {...}, "config": config_to_dict(cfg)}

Everything is stored as tensors and plain Python containers so that it loads with
``torch.load(weights_only=True)``; arbitrary pickles are only read when the user opts in.

Writes are atomic: the bytes go to a temporary file in the destination directory, are flushed and
fsync'ed, and the file is then renamed over the final name (``os.replace`` is atomic on POSIX and
Windows). A crash mid-save therefore leaves the previous checkpoint untouched and never a
truncated file under a checkpoint name.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from engine.distributed import get_rank

__all__ = [
    "atomic_write",
    "atomic_save",
    "CheckpointManager",
    "load_checkpoint",
    "find_resume_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "LegacyPickleError",
]

_CKPT_RE = re.compile(r"^checkpoint_(\d+)\.pth$")


class LegacyPickleError(pickle.UnpicklingError):
    """A checkpoint holds Python objects that the safe (weights_only) loader refuses."""


def _fsync_dir(directory: Path) -> None:
    # Persist the rename itself; not supported on every platform / filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Run ``write(f)`` on a temp file ``f`` (binary) beside ``path``, fsync it, rename it over ``path``.

    The one atomic writer of the tree (checkpoints, safetensors exports, their json): ``path``
    either holds the complete new bytes or is left as it was.

    Returns:
        The final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Includes KeyboardInterrupt: never leave temp files behind.
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` that either fully succeeds or leaves ``path`` as it was.

    Returns:
        The final path.
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


def _link_or_copy(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` a hard link to (or, where links fail, a copy of) ``src``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()
        try:
            os.link(src, tmp)  # no extra disk space and no extra write
        except OSError:
            shutil.copyfile(src, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dst.parent)


class CheckpointManager:
    """Numbered checkpoints in ``run_dir`` with rotation and a ``last.pth`` pointer.

    Files: ``checkpoint_{step:08d}.pth`` (the newest ``keep_last`` are kept), ``last.pth`` (a hard
    link to, or copy of, the newest numbered one) and named ones from :meth:`save_named` (never
    rotated). Saving is a no-op returning None on ranks other than 0.

    Args:
        run_dir: output directory of the run.
        keep_last: how many numbered checkpoints to keep; 0 or None keeps all.
    """

    def __init__(self, run_dir: str | os.PathLike, keep_last: int | None = 2) -> None:
        self.run_dir = Path(run_dir)
        self.keep_last = keep_last

    def path_for(self, step: int) -> Path:
        return self.run_dir / f"checkpoint_{int(step):08d}.pth"

    def checkpoints(self) -> list[Path]:
        """Numbered checkpoints, oldest first."""
        if not self.run_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.run_dir.iterdir() if (m := _CKPT_RE.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, state: dict, step: int) -> Path | None:
        """Write ``state`` as the checkpoint of ``step``, update ``last.pth``, prune old ones."""
        if get_rank() != 0:
            return None
        path = atomic_save(state, self.path_for(step))
        _link_or_copy(path, self.run_dir / "last.pth")
        if self.keep_last:
            for old in self.checkpoints()[: -self.keep_last]:
                old.unlink(missing_ok=True)
        return path

    def save_named(self, state: dict, name: str) -> Path | None:
        """Write ``{name}.pth`` (e.g. ``"final"``, ``"nonfinite"``); not rotated."""
        if get_rank() != 0:
            return None
        if not name.endswith(".pth"):
            name += ".pth"
        return atomic_save(state, self.run_dir / name)

    def latest(self) -> Path | None:
        """Newest numbered checkpoint (each is complete thanks to atomic writes), else ``last.pth``."""
        ckpts = self.checkpoints()
        if ckpts:
            return ckpts[-1]
        last = self.run_dir / "last.pth"
        return last if last.is_file() else None


def find_resume_checkpoint(resume: str | os.PathLike | None, run_dir: str | os.PathLike) -> Path | None:
    """Resolve a ``--resume`` value: None -> None; ``"auto"`` -> newest checkpoint in ``run_dir``
    (None if there is none yet, i.e. a fresh run); anything else must be an existing file."""
    if resume is None or str(resume) == "":
        return None
    if str(resume) == "auto":
        return CheckpointManager(run_dir).latest()
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(
            f"resume checkpoint {str(path)!r} does not exist; pass an existing file or 'auto'"
        )
    return path


def load_checkpoint(
    path: str | os.PathLike, allow_pickle: bool = False, map_location: str | torch.device = "cpu"
) -> dict:
    """Load a checkpoint safely.

    Args:
        path: the ``.pth`` file.
        allow_pickle: also accept legacy checkpoints that need full unpickling (this can run
            arbitrary code: only for files you trust).
        map_location: where tensors are loaded (default CPU; move them afterwards).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        LegacyPickleError: the file holds non-tensor Python objects and ``allow_pickle`` is False.
        RuntimeError: the file is not a readable torch checkpoint (e.g. truncated).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if not allow_pickle:
            raise LegacyPickleError(
                f"checkpoint {str(path)!r} contains Python objects that the safe loader "
                f"(torch.load weights_only=True) refuses ({str(e).splitlines()[0]}). It needs a legacy "
                "pickle load, which can execute arbitrary code: pass --allow-pickle (allow_pickle=True) "
                "only if you trust where the file came from."
            ) from e
        warnings.warn(f"loading {path} with full unpickling (allow_pickle=True)", stacklevel=2)
        obj = torch.load(path, map_location=map_location, weights_only=False)
    except RuntimeError as e:
        raise RuntimeError(
            f"cannot read checkpoint {str(path)!r} ({e}); the file is corrupt or not a torch "
            "checkpoint; resume from an earlier checkpoint_*.pth in the same directory"
        ) from e
    if not isinstance(obj, dict):
        raise RuntimeError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, expected a dict")
    return obj


def capture_rng_state() -> dict:
    """RNG states of python ``random``, numpy, torch CPU and (if initialised) every CUDA device.

    Stored as tensors and plain Python values so the checkpoint stays ``weights_only``-loadable.
    Under DDP every rank has its own state: gather them with
    ``engine.distributed.all_gather_object(capture_rng_state())`` and store the list;
    :func:`restore_rng_state` accepts either form.
    """
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict | list) -> None:
    """Inverse of :func:`capture_rng_state`; a list is indexed by this process's rank."""
    if isinstance(state, list):
        rank = get_rank()
        if rank >= len(state):
            raise ValueError(f"RNG state list has {len(state)} entries but this is rank {rank}")
        state = state[rank]
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal.tolist()), gauss))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            warnings.warn(
                f"checkpoint has CUDA RNG states for {len(cuda_states)} devices, this process sees "
                f"{torch.cuda.device_count()}; CUDA RNG not restored",
                stacklevel=2,
            )
