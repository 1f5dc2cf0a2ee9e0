"""Past one GPU's memory: FSDP2 per transformer block, activation checkpointing, compiled blocks.

``run.parallel = "fsdp"`` shards every transformer block (each child of a ``ModuleList`` named
``blocks`` or ``*_blocks`` / ``decoder``: the encoder's, DINO's teacher's, MAE's decoder's) as its
own FSDP2 unit, then the root (embeddings, heads, necks and everything else) as one more. Parameters
become ``DTensor`` shards (``Shard(0)`` over the processes); a unit's full parameters exist only
while it runs. Buffers stay plain, replicated tensors. Parameter names (FQNs) do not change, so
state dicts, optimizer groups and layer decay see the same names as under DDP.

Decisions:

- DINO's EMA teacher is sharded like the student (it is as large): its blocks are units of their
  own, sharded the same way, so the EMA ``teacher <- m teacher + (1 - m) student`` runs on the
  local shards (``torch._foreach_*`` on DTensors of identical placement) and equals the DDP update.
- Mixed precision: ``bf16`` runs (``engine.precision``) keep fp32 master weights and optimizer
  state; FSDP gathers parameters in bf16 and reduce-scatters gradients in fp32
  (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``); autocast still wraps the step,
  and the root does not cast the model's inputs (boxes and masks keep their dtype). Batch and
  group norms are units of their own with fp32 weights (as under DDP's autocast).
  ``fp32`` has no policy. ``fp16`` (a GradScaler over DTensor grads) is refused.
- Activation checkpointing and ``torch.compile`` replace each block's ``forward`` (an instance
  attribute), not the module, so names stay the same and FSDP's hooks stay outside the
  checkpointed / compiled region (the recomputation in backward runs between FSDP's pre-backward
  all-gather and its reduce-scatter, as in torchtitan).

The optimizer is built by the task before sharding (over plain parameters);
:func:`rebind_optimizer` points its groups at the sharded parameters by name.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from engine.distributed import DistInfo
from engine.errors import ConfigError

__all__ = [
    "check_fsdp_run",
    "transformer_blocks",
    "checkpoint_blocks",
    "compile_blocks",
    "shard_model",
    "rebind_optimizer",
    "no_grad_sync",
    "is_sharded",
    "unsharded",
    "meta_replica",
    "full_replica",
]

_BLOCK_LISTS = ("blocks", "decoder")
_FP32_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)  # ModuleList attribute names whose children are blocks


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """Every child of a ``ModuleList`` attribute named ``blocks``, ``*_blocks`` or ``decoder``, in
    module order (encoder, teacher and decoder blocks alike); [] for a model without blocks."""
    found = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.ModuleList) and (leaf in _BLOCK_LISTS or leaf.endswith("_blocks")):
            found.extend(module)
    return found


def checkpoint_blocks(blocks: list[nn.Module]) -> None:
    """Recompute each block's activations in backward (non-reentrant ``torch.utils.checkpoint``;
    the RNG state is replayed, so drop path draws the same masks and the gradients are equal)."""
    for block in blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def compile_blocks(blocks: list[nn.Module]) -> None:
    """``torch.compile`` each block's forward (identical blocks share one compiled graph)."""
    for block in blocks:
        block.forward = torch.compile(block.forward)


def check_fsdp_run(precision: str) -> None:
    """Refuse, before anything is built or written, an FSDP run that cannot start."""
    if not torch.distributed.is_initialized():
        raise ConfigError(
            "run.parallel=fsdp needs a process group: launch with torchrun (e.g. torchrun "
            "--nproc_per_node 8 ...), --nproc_per_node 1 included, or use run.parallel=ddp"
        )
    if precision == "fp16":
        raise ConfigError(
            "run.parallel=fsdp does not support precision=fp16 (loss scaling of sharded gradients); "
            "use --set run.precision=bf16 (or fp32)"
        )


def _mixed_precision(precision: str):
    from torch.distributed.fsdp import MixedPrecisionPolicy  # noqa: PLC0415 - only FSDP runs need it

    check_fsdp_run(precision)
    if precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def _root_policy(mp):
    """The root's policy leaves the model's inputs as they come (detection targets hold box
    coordinates that bf16 would round to 8 px at 1333); autocast casts what the layers compute on."""
    return dataclasses.replace(mp, cast_forward_inputs=False)


def shard_model(model: nn.Module, info: DistInfo, precision: str) -> nn.Module:
    """FSDP2 ``fully_shard`` on every transformer block, then on ``model`` (in place; returned).

    Args:
        model: the task's module on ``info.device``, not wrapped.
        info: the process group must exist (torchrun, any number of processes, 1 included).
        precision: resolved precision (``bf16`` / ``fp32``).
    """
    from torch.distributed.device_mesh import init_device_mesh  # noqa: PLC0415
    from torch.distributed.fsdp import fully_shard  # noqa: PLC0415

    check_fsdp_run(precision)
    mesh = init_device_mesh(info.device.type, (info.world_size,))
    mp = _mixed_precision(precision)
    # Rank 0's initial weights everywhere, as DDP's constructor does: every rank seeds with
    # seed + rank, and each would otherwise keep its slice of its own initialisation.
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            torch.distributed.broadcast(tensor, src=0)
    if mp.param_dtype is not None:
        # Batch / group norms keep fp32 weights, as under DDP's autocast (CPU autocast leaves
        # batch_norm alone, which then refuses bf16 weights beside fp32 running statistics).
        fp32 = _root_policy(dataclasses.replace(mp, param_dtype=None))
        for norm in [m for m in model.modules() if isinstance(m, _FP32_NORMS)]:
            fully_shard(norm, mesh=mesh, mp_policy=fp32)
    for block in transformer_blocks(model):
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=_root_policy(mp))
    return model


def rebind_optimizer(optimizer: torch.optim.Optimizer, names: dict[int, str], model: nn.Module) -> None:
    """Point ``optimizer``'s groups at ``model``'s current parameters (after sharding replaced them).

    Args:
        names: ``{id(param): name}`` taken from ``model.named_parameters()`` before sharding.
    """
    if optimizer.state:
        raise RuntimeError("rebind_optimizer needs an optimizer without state (load the state after sharding)")
    now = dict(model.named_parameters())
    for group in optimizer.param_groups:
        group["params"] = [now[names[id(p)]] for p in group["params"]]


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule  # noqa: PLC0415

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def no_grad_sync(model: nn.Module) -> Iterator[None]:
    """Accumulation micro-batches: no gradient reduction (DDP ``no_sync``; FSDP
    ``set_requires_gradient_sync(False)``, which keeps unsharded gradients until the last one)."""
    if is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    elif hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield


@contextlib.contextmanager
def unsharded(model: nn.Module) -> Iterator[None]:
    """Full parameters on every process for the duration (evaluation): one all-gather per unit on
    entry, then forwards run without collectives, so processes may run different numbers of them
    (validation shards of unequal size). Costs the full parameters' memory (in FSDP's gather
    dtype) while it lasts. A no-op for a model that is not sharded."""
    from torch.distributed.fsdp import FSDPModule  # noqa: PLC0415

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:
            unit.set_reshard_after_forward(True, recurse=False)
            unit.reshard()


def meta_replica(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no memory): the
    shape of the unsharded model, to be filled by :func:`full_replica` at the end of a run."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def full_replica(sharded: nn.Module, replica: nn.Module, is_main: bool) -> nn.Module | None:
    """Gather ``sharded``'s full state (every rank calls this) into ``replica`` on rank 0's CPU.

    Returns:
        The filled replica (unsharded, CPU) on rank 0, None elsewhere.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # noqa: PLC0415

    full = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main:
        return None
    replica = replica.to_empty(device="cpu")
    replica.load_state_dict(full)
    live = dict(sharded.named_buffers())  # non-persistent buffers are not in the state dict
    for name, buffer in replica.named_buffers():
        buffer.copy_(live[name].detach().cpu())
    return replica.eval()
