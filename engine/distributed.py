"""Process-group setup and the few collectives the training loops need.

Works unchanged in four settings:

* plain ``python tool.py``: no process group, every helper is a cheap identity / no-op;
* ``torchrun --nproc_per_node N`` on GPUs: NCCL, one device per local rank;
* ``torchrun`` on CPU (tests, debugging): gloo;
* ``srun`` starting one process per GPU: SLURM's variables stand in for torchrun's (`engine.slurm`).

Only ``torch.distributed`` is used; nothing here imports the project outside `engine`.
"""

from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from engine.slurm import torchrun_env_from_slurm

__all__ = [
    "DistInfo",
    "init_distributed",
    "cleanup_distributed",
    "is_dist_initialized",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "barrier",
    "broadcast_buffers",
    "all_reduce_sum",
    "all_reduce_mean",
    "all_gather_with_grad",
    "all_gather_object",
    "seed_everything",
    "wrap_ddp",
    "unwrap_model",
]

# Environment variables torchrun (torch.distributed.run) sets for every worker.
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank in ``[0, world_size)``.
        world_size: number of processes in the job (1 without torchrun).
        local_rank: rank on this node; selects the CUDA device.
        device: the device this process computes on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _resolve_device(device: str | torch.device, local_rank: int) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device='cuda' was requested but CUDA is not available; use device='cpu' or 'auto'"
        )
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(device: str | torch.device = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Initialise the default process group from torchrun's environment, if present.

    Args:
        device: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, or a torch.device.
        timeout_minutes: collective timeout; generous because evaluation on rank 0 can be slow.

    Returns:
        DistInfo for this process. Without ``RANK``/``WORLD_SIZE`` in the environment this is
        ``DistInfo(0, 1, 0, device)`` and no process group is created. Calling it again after the
        group exists just returns the current info.
    """
    env_present = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    slurm = None if env_present else torchrun_env_from_slurm(os.environ)
    if slurm is not None:  # one process per GPU started by srun (engine/slurm.py)
        os.environ.update(slurm)
        env_present = True
    if not env_present:
        return DistInfo(0, 1, 0, _resolve_device(device, 0))

    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise RuntimeError(
            f"RANK/WORLD_SIZE are set but {missing} are not; launch with `torchrun` "
            "(python -m torch.distributed.run) or unset RANK and WORLD_SIZE for a single process"
        )
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    dev = _resolve_device(device, local_rank)
    if dev.type == "cuda":
        # Must happen before NCCL creates its communicator so each rank owns one GPU.
        torch.cuda.set_device(dev)

    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {}
        if dev.type == "cuda":
            kwargs["device_id"] = dev  # eager NCCL init, binds the communicator to this GPU
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            **kwargs,
        )
    return DistInfo(rank, world_size, local_rank, dev)


def cleanup_distributed() -> None:
    """Destroy the default process group if one exists (safe to call always)."""
    if is_dist_initialized():
        dist.destroy_process_group()


def is_dist_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy process `src`'s buffers (BatchNorm running statistics, ...) into every process's `module`.

    Call before evaluating a model trained under DDP. Where BatchNorm is not synchronised (gloo on
    CPUs) each process's running statistics last moved with its own batch, so the processes would
    score their shards of the validation set with slightly different models, none of them the
    checkpoint rank 0 saves. DDP itself re-broadcasts rank 0's buffers at every forward.
    """
    if get_world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all ranks (out of place; not differentiable). Any shape."""
    out = t.detach().clone()
    if get_world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of ``t`` over all ranks (out of place; not differentiable). Floating tensors only."""
    if not t.is_floating_point():
        raise TypeError(f"all_reduce_mean needs a floating tensor, got {t.dtype}; use all_reduce_sum")
    return all_reduce_sum(t) / get_world_size()


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from all ranks along dim 0, keeping autograd.

    Args:
        t: (B, ...) local tensor; every rank must pass the same shape.

    Returns:
        (world_size * B, ...) with rank r's rows at ``[r*B:(r+1)*B]``. Backward sums the gradient
        of every rank's loss w.r.t. each slice and hands rank r its slice, so with DDP's gradient
        averaging the update equals single-process training on the concatenated batch (e.g. an
        InfoNCE whose negatives are the global batch). Identity when world_size == 1.
    """
    if get_world_size() == 1:
        return t
    # torch's autograd-aware all_gather: backward is a reduce-scatter (sum) of the output grads.
    return torch.cat(dist_fn.all_gather(t), dim=0)


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank -> list indexed by rank (``[obj]`` alone)."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python ``random``, numpy and torch (CPU and all CUDA devices) with ``seed + rank``.

    Each rank gets its own stream so augmentations / dropout differ across ranks while the run as
    a whole stays reproducible. Returns the seed actually used.
    """
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)  # also seeds every CUDA device
    return s


def wrap_ddp(model: nn.Module, info: DistInfo, **ddp_kwargs: Any) -> nn.Module:
    """Wrap ``model`` (already on ``info.device``) in DistributedDataParallel when world_size > 1."""
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP / torch.compile wrappers (for saving state dicts without ``module.``)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model
