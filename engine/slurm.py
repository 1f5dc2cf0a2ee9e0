"""torchrun's environment from SLURM's, for processes that `srun` starts one per GPU.

`srun --ntasks-per-node=G python -m pretrain.cli ...` starts every rank itself (no torchrun), so
SLURM's signals (`--signal=USR1@120`, preemption's SIGTERM) reach each training process directly
and the trainer's checkpoint-and-exit-75 path runs on every rank. Each task then has::

    SLURM_PROCID  -> RANK          SLURM_STEP_NUM_TASKS (or SLURM_NTASKS) -> WORLD_SIZE
    SLURM_LOCALID -> LOCAL_RANK    first host of SLURM_STEP_NODELIST / SLURM_JOB_NODELIST -> MASTER_ADDR
    MASTER_PORT: kept if set, else 20000 + SLURM_JOB_ID mod 20000 (the same on every node of a job)

Only inside an `srun` step of more than one task: `SLURM_STEP_NUM_TASKS` is set by srun, not by
sbatch, so a plain `python tool.py` in a batch script (or a one-task step) stays one process.
torchrun's own variables, when present, always win (`distributed.init_distributed` reads them first).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping

__all__ = ["expand_nodelist", "torchrun_env_from_slurm"]

_BRACKET = re.compile(r"\[([^\]]*)\]")


def _split_top_level(nodelist: str) -> list[str]:
    """Split on commas outside brackets: "a[1-2,4],b" -> ["a[1-2,4]", "b"]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(nodelist):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(nodelist[start:i])
            start = i + 1
    parts.append(nodelist[start:])
    return [p for p in (s.strip() for s in parts) if p]


def _expand_range(spec: str) -> list[str]:
    """"01-03,7" -> ["01", "02", "03", "7"] (zero padding kept, as SLURM writes it)."""
    out = []
    for piece in spec.split(","):
        lo, _, hi = piece.partition("-")
        if not hi:
            out.append(lo)
            continue
        width = len(lo) if lo.startswith("0") else 0
        out += [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
    return out


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compact host list -> host names, in order (`scontrol show hostnames` without scontrol).

    "gpu[001-003,010],cpu7" -> ["gpu001", "gpu002", "gpu003", "gpu010", "cpu7"];
    "rack[1-2]-n[01-02]" -> ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"].
    """
    hosts = []
    for item in _split_top_level(nodelist):
        pieces = _BRACKET.split(item)  # literal, range, literal, range, ..., literal
        choices = [[p] if i % 2 == 0 else _expand_range(p) for i, p in enumerate(pieces)]
        hosts += ["".join(combo) for combo in itertools.product(*choices)]
    return hosts


def torchrun_env_from_slurm(environ: Mapping[str, str]) -> dict[str, str] | None:
    """RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT for this srun task, or None when
    this is not a task of a multi-task srun step (see the module docstring)."""
    if "SLURM_PROCID" not in environ or "SLURM_STEP_NUM_TASKS" not in environ:
        return None
    world = int(environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS", "1"))
    if world <= 1:
        return None
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST", "")
    hosts = expand_nodelist(nodelist)
    if not hosts and "MASTER_ADDR" not in environ:
        raise RuntimeError("SLURM task without SLURM_JOB_NODELIST: set MASTER_ADDR to the first node's host name")
    port = environ.get("MASTER_PORT") or str(20000 + int(environ.get("SLURM_JOB_ID", "0")) % 20000)
    return {
        "RANK": environ["SLURM_PROCID"],
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": environ.get("MASTER_ADDR") or hosts[0],
        "MASTER_PORT": port,
    }
