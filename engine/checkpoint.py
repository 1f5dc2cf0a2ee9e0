"""Training checkpoints that survive crashes and resume exactly.

State-dict convention (every loop uses these keys; extra keys are allowed)::

    {"model": ..., "optimizer": ..., "scaler": ..., "step": int, "epoch": int,
     "rng": capture_rng_state(), "sampler": {...} or "data": {...}, "config": config_to_dict(cfg)}

Everything is stored as tensors and plain Python containers so that it loads with
``torch.load(weights_only=True)``; arbitrary pickles are only read when the user opts in.

Writes are atomic: the bytes go to a temporary file in the destination directory, are flushed and
fsync'ed, and the file is then renamed over the final name (``os.replace`` is atomic on POSIX and
Windows). A crash mid-save therefore leaves the previous checkpoint untouched and never a
truncated file under a checkpoint name; the temporary file it leaves (``.<name>.*.tmp``) is removed
when a :class:`CheckpointManager` next opens the directory.

Faults are reported as :class:`CheckpointError` (a ``ConfigError``, so the tools print the message):
a missing ``--resume`` file, a truncated or corrupt one, bytes that are not a torch checkpoint at
all. ``--resume auto`` skips a damaged newest checkpoint with a warning and resumes from the newest
intact one (see :func:`checkpoint_problem` for what "intact" checks).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from engine.config import ConfigError
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
    "CheckpointError",
    "checkpoint_problem",
    "replace_dir",
    "SHARDED_SUFFIX",
    "STATE_FILE",
]

_CKPT_RE = re.compile(r"^checkpoint_(\d+)\.(pth|dcp)$")  # a file, or a sharded (DCP) folder
SHARDED_SUFFIX = ".dcp"
STATE_FILE = "trainer_state.pth"  # a sharded checkpoint's non-tensor side (see engine.sharded_checkpoint)
_TMP_RE = re.compile(r"^\..+\.tmp$")  # what atomic_save / _link_or_copy leave when killed mid-write
_log = logging.getLogger("target_ssl")


class CheckpointError(ConfigError):
    """A checkpoint is missing, truncated, corrupt or not a torch checkpoint; names file and fix."""


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


def replace_dir(tmp: Path, final: Path) -> Path:
    """Rename the complete folder ``tmp`` to ``final`` (a sharded checkpoint), replacing an older
    ``final``: that one is first renamed aside, so ``final`` is at every moment complete or absent."""
    old = final.with_name(f".{final.name}.old.tmp")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _numbered_checkpoints(run_dir: Path) -> list[Path]:
    """``checkpoint_{step}.pth`` files of ``run_dir``, oldest (lowest step) first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


class CheckpointManager:
    """Numbered checkpoints in ``run_dir`` with rotation and a ``last.pth`` pointer.

    Files: ``checkpoint_{step:08d}.pth`` (the newest ``keep_last`` are kept), ``last.pth`` (a hard
    link to, or copy of, the newest numbered one) and named ones from :meth:`save_named` (never
    rotated). Saving is a no-op returning None on ranks other than 0.

    With ``sharded=True`` (FSDP) every rank calls the saves, which write folders
    ``checkpoint_{step:08d}.dcp`` / ``{name}.dcp`` (see :mod:`engine.sharded_checkpoint`; no
    ``last`` pointer: :meth:`latest` and ``--resume auto`` take the newest numbered one).

    Args:
        run_dir: output directory of the run.
        keep_last: how many numbered checkpoints to keep; 0 or None keeps all.
        sharded: write sharded (DCP) checkpoints; ``state["model"]`` / ``state["optimizer"]`` are
            then the DTensor state dicts of ``torch.distributed.checkpoint.state_dict.get_state_dict``.
    """

    def __init__(self, run_dir: str | os.PathLike, keep_last: int | None = 2, sharded: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.keep_last = keep_last
        self.sharded = sharded
        self.suffix = SHARDED_SUFFIX if sharded else ".pth"
        if get_rank() == 0:
            self.remove_stale_temp_files()

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the ``.<name>.*.tmp`` files (and sharded folders) that saves killed mid-write left
        (rank 0 calls this on opening, before it writes anything). Returns the removed paths."""
        if not self.run_dir.is_dir():
            return []
        stale = sorted(p for p in self.run_dir.iterdir() if _TMP_RE.match(p.name))
        for p in stale:
            _log.warning("removing %s, left by a save that was killed", p)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return stale

    def path_for(self, step: int) -> Path:
        return self.run_dir / f"checkpoint_{int(step):08d}{self.suffix}"

    def path_named(self, name: str) -> Path:
        return self.run_dir / f"{name.removesuffix('.pth')}{self.suffix}"

    def checkpoints(self) -> list[Path]:
        """Numbered checkpoints, oldest first."""
        return _numbered_checkpoints(self.run_dir)

    def _write(self, state: dict, path: Path) -> Path | None:
        if self.sharded:
            from engine.sharded_checkpoint import save_sharded  # noqa: PLC0415 - it imports this module

            return save_sharded(state, path)
        return atomic_save(state, path) if get_rank() == 0 else None

    def save(self, state: dict, step: int) -> Path | None:
        """Write ``state`` as the checkpoint of ``step``, update ``last.pth``, prune old ones."""
        path = self._write(state, self.path_for(step))
        if path is None:
            return None
        if not self.sharded:
            _link_or_copy(path, self.run_dir / "last.pth")
        if self.keep_last:
            for old in self.checkpoints()[: -self.keep_last]:
                if old.is_dir():
                    shutil.rmtree(old)
                else:
                    old.unlink(missing_ok=True)
        return path

    def save_named(self, state: dict, name: str) -> Path | None:
        """Write ``{name}.pth`` (e.g. ``"final"``, ``"nonfinite"``); not rotated."""
        return self._write(state, self.path_named(name))

    def latest(self) -> Path | None:
        """Newest numbered checkpoint (each is complete thanks to atomic writes), else ``last.pth``."""
        ckpts = self.checkpoints()
        if ckpts:
            return ckpts[-1]
        last = self.run_dir / "last.pth"
        return last if last.is_file() else None


_PICKLE_PROTOCOLS = (2, 3, 4, 5)  # torch's legacy (non-zip) format starts with a pickle of these


def _looks_like_pickle(head: bytes) -> bool:
    return len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with ``path`` as a torch checkpoint, read cheaply; None when it looks intact.

    Checks the file exists, and for torch's zip format (every ``torch.save`` since 1.6) that the
    archive's central directory is there (a truncated file loses it) and that the pickle record
    ``*/data.pkl`` passes its CRC. Tensor payloads are not read: a file damaged inside a tensor
    only fails at load time, in :func:`load_checkpoint`, with a :class:`CheckpointError`.
    """
    path = Path(path)
    if path.is_dir():
        missing = [n for n in (".metadata", STATE_FILE) if not (path / n).is_file()]
        return f"is a sharded checkpoint folder without {' and '.join(missing)}" if missing else None
    if not path.is_file():
        return "does not exist"
    with open(path, "rb") as f:
        head = f.read(4)
    if _looks_like_pickle(head):
        return None  # legacy non-zip torch.save / plain pickle: load_checkpoint decides
    if head != b"PK\x03\x04":
        return "is not a torch checkpoint (neither a torch zip archive nor a pickle): corrupt or another format"
    try:
        with zipfile.ZipFile(path) as z:
            records = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not records:
                return "is a zip archive but not a torch checkpoint (no data.pkl)"
            with z.open(records[0]) as rec:
                while rec.read(1 << 20):  # reading to the end checks the CRC
                    pass
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"is truncated or corrupt ({e}): an interrupted write or copy"
    return None


def _intact_candidates(run_dir: Path, extra_names: tuple[str, ...]) -> list[Path]:
    """Resume candidates newest first: numbered checkpoints by step, ``last.pth``, then any of
    ``extra_names`` (e.g. ``interrupted.pth``) that is newer than the newest numbered one."""
    numbered = _numbered_checkpoints(run_dir)[::-1]
    newest = numbered[0].stat().st_mtime if numbered else float("-inf")
    extra = [run_dir / n for n in extra_names if (run_dir / n).is_file()]
    extra = sorted((p for p in extra if p.stat().st_mtime > newest), key=lambda p: -p.stat().st_mtime)
    last = [run_dir / "last.pth"] if (run_dir / "last.pth").is_file() else []
    return extra + numbered + last


def find_resume_checkpoint(
    resume: str | os.PathLike | None,
    run_dir: str | os.PathLike,
    extra_names: tuple[str, ...] = ("interrupted.pth",),
) -> Path | None:
    """Resolve a ``--resume`` value: None -> None; ``"auto"`` -> the newest intact checkpoint in
    ``run_dir`` (None when there is none yet, i.e. a fresh run), skipping damaged newer ones with a
    warning; anything else must be an intact checkpoint file.

    Raises:
        CheckpointError: the given file is missing or damaged, or every checkpoint in ``run_dir`` is.
    """
    if resume is None or str(resume) == "":
        return None
    run_dir = Path(run_dir)
    if str(resume) == "auto":
        candidates = _intact_candidates(run_dir, extra_names)
        for path in candidates:
            problem = checkpoint_problem(path)
            if problem is None:
                return path
            _log.warning("not resuming from %s: it %s; trying the previous checkpoint", path, problem)
        if candidates:
            raise CheckpointError(
                f"every checkpoint in {run_dir} is damaged ({', '.join(p.name for p in candidates)}); "
                "start over with --overwrite, or pass an intact file with --resume PATH"
            )
        return None
    path = Path(resume)
    problem = checkpoint_problem(path)
    if problem is not None:
        nearby = [p.name for p in _intact_candidates(path.parent, extra_names)] if path.parent.is_dir() else []
        hint = f" ({path.parent} holds {', '.join(nearby)})" if nearby else ""
        raise CheckpointError(
            f"resume checkpoint {str(path)!r} {problem}; pass an intact checkpoint file{hint}, or "
            "--resume auto to take the newest intact one in the output directory"
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
        CheckpointError: ``path`` is missing, truncated, corrupt or not a torch checkpoint.
        LegacyPickleError: a real torch / pickle file holds Python objects that the safe loader
            refuses, and ``allow_pickle`` is False.
    """
    path = Path(path)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"checkpoint {str(path)!r} {problem}; {_EARLIER}")
    if path.is_dir():  # sharded: the side file (its "model" holds the buffers only)
        return load_checkpoint(path / STATE_FILE, allow_pickle, map_location)
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
        obj = _full_unpickle(path, map_location)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r} ({str(e).splitlines()[0] if str(e) else type(e).__name__}): "
            f"the file is corrupt or not a torch checkpoint; {_EARLIER}"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(obj).__name__}, expected a dict")
    return obj


_EARLIER = "resume from an earlier checkpoint_*.pth in the same directory (--resume auto skips damaged ones)"


def _full_unpickle(path: Path, map_location: str | torch.device) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any failure of an opted-in legacy load is a bad file
        raise CheckpointError(f"cannot unpickle checkpoint {str(path)!r} ({type(e).__name__}: {e})") from e


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
