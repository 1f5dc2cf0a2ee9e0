"""Sharded checkpoints (``torch.distributed.checkpoint``, DCP): every process writes its shards.

Layout of ``checkpoint_{step:08d}.dcp/`` (a folder)::

    .metadata, __<rank>_0.distcp     DCP: {"model": ..., "optimizer": ...} as DTensor shards, by name
    trainer_state.pth                 the rest of the trainer's checkpoint (step, every rank's RNG,
                                      sampler, skips, best, task state, config, meta, scaler) and,
                                      as "model", the model's buffers (replicated under FSDP; what
                                      a task reads from ``ctx.resume_state["model"]`` while building)

DCP stores each tensor by name with its global shape, so a checkpoint written by N processes loads
in M: into FSDP shards of another size, or into a plain (DDP / single-process) model, whose
tensors are full. Writes go to ``.checkpoint_{step}.dcp.tmp/`` and are renamed into place by rank 0
after every rank finished (:func:`engine.checkpoint.replace_dir`), so a folder under a checkpoint
name is complete; a killed save leaves only the temp folder, removed on the next start. On several
machines the run folder must be on a shared file system (as for any multi-node checkpoint).

:func:`consolidate` turns a folder into one ordinary ``.pth`` checkpoint (what DDP runs write):
``python -m engine.sharded_checkpoint RUN/checkpoint_00001000.dcp out.pth``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.checkpoint import STATE_FILE, atomic_save, load_checkpoint, replace_dir
from engine.distributed import barrier, get_rank

__all__ = ["sharded_model_state", "save_sharded", "load_sharded", "load_full", "consolidate", "optimizer_by_ids"]

_TENSOR_KEYS = ("model", "optimizer")


def _persistent_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for module_name, module in model.named_modules():
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and name not in module._non_persistent_buffers_set:
                out[f"{module_name}.{name}" if module_name else name] = buffer.detach().cpu().clone()
    return out


def sharded_model_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``{"model", "optimizer", "buffers"}`` for a sharded checkpoint (every rank calls it): DCP
    state dicts keyed by parameter name (DTensor shards under FSDP, full tensors otherwise)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict  # noqa: PLC0415

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optimizer": optim_sd, "buffers": _persistent_buffers(model)}


def save_sharded(state: dict[str, Any], path: Path) -> Path | None:
    """Write ``state`` (the trainer's checkpoint with ``model`` / ``optimizer`` / ``buffers`` from
    :func:`sharded_model_state`) as the folder ``path``. Every rank calls it; returns ``path`` on
    rank 0, None elsewhere."""
    import torch.distributed.checkpoint as dcp  # noqa: PLC0415

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    dcp.save({k: state[k] for k in _TENSOR_KEYS}, checkpoint_id=tmp)
    if get_rank() == 0:
        side = {k: v for k, v in state.items() if k not in (*_TENSOR_KEYS, "buffers")}
        atomic_save({**side, "model": state["buffers"]}, tmp / STATE_FILE)
        replace_dir(tmp, path)
    barrier()  # nobody goes on (or reads the folder) before it is complete
    return path if get_rank() == 0 else None


def _saved_keys(path: Path) -> set[str]:
    from torch.distributed.checkpoint import FileSystemReader  # noqa: PLC0415

    return set(FileSystemReader(str(path)).read_metadata().state_dict_metadata)


def load_sharded(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the folder ``path`` into ``model`` and ``optimizer`` (sharded or not, any number of
    processes; every rank calls it). Parameters that had no optimizer state when it was saved
    (e.g. DINO's frozen prototypes early on) get none now either, so AdamW's step counts match."""
    import torch.distributed.checkpoint as dcp  # noqa: PLC0415
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict  # noqa: PLC0415

    model_sd, optim_sd = get_state_dict(model, optimizer)  # creates empty optimizer state to fill
    saved = _saved_keys(Path(path))
    optim_sd["state"] = {
        fqn: entry for fqn, entry in optim_sd["state"].items()
        if all(f"optimizer.state.{fqn}.{k}" in saved for k in entry)
    }  # fmt: skip
    target = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(target, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=target["model"], optim_state_dict=target["optimizer"])


def _optimizer_by_names(optim_state: dict, optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    """An ordinary (id-keyed) optimizer state dict with parameter names as keys (DCP's form)."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    groups = [{**g, "params": [order[i] for i in g["params"]]} for g in optim_state["param_groups"]]
    return {"state": {order[i]: s for i, s in optim_state["state"].items()}, "param_groups": groups}


def load_full(state: dict, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load an ordinary checkpoint (full tensors: a DDP run's, or :func:`consolidate`'s) into a
    sharded ``model`` / ``optimizer``; each rank keeps its shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict  # noqa: PLC0415

    optim = _optimizer_by_names(state["optimizer"], optimizer, model)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=optim,
                   options=StateDictOptions(full_state_dict=True))  # fmt: skip


def optimizer_by_ids(optim_state: dict) -> dict:
    """DCP's name-keyed optimizer state dict -> ``torch.optim.Optimizer.state_dict()``'s form (ids
    numbered through the groups in order, as the same optimizer over the same model numbers them)."""
    ids: dict[str, int] = {}
    groups = [{**g, "params": [ids.setdefault(n, len(ids)) for n in g["params"]]} for g in optim_state["param_groups"]]
    return {"state": {ids[n]: s for n, s in optim_state["state"].items()}, "param_groups": groups}


def consolidate(path: str | Path, out: str | Path) -> Path:
    """One ordinary checkpoint file (model, optimizer and the rest, full tensors) from the sharded
    folder ``path``, in a single process; it resumes a DDP or single-process run, and the encoder
    tools read its ``"model"``. Returns ``out``."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save  # noqa: PLC0415

    path, out = Path(path), Path(out)
    flat_file = out.with_name(f".{out.name}.dcp.tmp")
    try:
        dcp_to_torch_save(str(path), str(flat_file))
        flat = torch.load(flat_file, map_location="cpu", weights_only=True)
    finally:
        flat_file.unlink(missing_ok=True)
    side = load_checkpoint(path / STATE_FILE)
    return atomic_save({**side, "model": flat["model"], "optimizer": optimizer_by_ids(flat["optimizer"])}, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Consolidate a sharded (DCP) checkpoint folder into one .pth file.")
    parser.add_argument("checkpoint", type=Path, help="a checkpoint_*.dcp folder")
    parser.add_argument("out", type=Path, nargs="?", help="output file (default: the folder's name with .pth)")
    args = parser.parse_args(argv)
    out = consolidate(args.checkpoint, args.out or args.checkpoint.with_suffix(".pth"))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
