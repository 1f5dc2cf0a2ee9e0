"""Distributed helpers: a real 2-process gloo run (torchrun) against single-process references.

The file doubles as the torchrun worker: ``python -m torch.distributed.run ... this_file --worker
OUT_DIR`` runs :func:`_worker` on every rank, which writes its gradients to ``OUT_DIR``; the test
then recomputes everything in one process on the concatenated batch and compares.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.distributed import (
    DistInfo,
    all_gather_object,
    all_gather_with_grad,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    seed_everything,
    unwrap_model,
    wrap_ddp,
)

REPO = Path(__file__).resolve().parents[1]
WORLD = 2
LOCAL_B = 4
TAU = 0.2


def _model() -> nn.Module:
    torch.manual_seed(0)  # identical initial weights on every rank (DDP also broadcasts them)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.0), nn.Linear(16, 3))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(WORLD * LOCAL_B, 6, generator=g), torch.randint(0, 3, (WORLD * LOCAL_B,), generator=g)


def _proj() -> torch.Tensor:
    return torch.randn(6, 5, generator=torch.Generator().manual_seed(2))


def _info_nce(queries: torch.Tensor, keys: torch.Tensor, offset: int) -> torch.Tensor:
    """Mean InfoNCE of (B, D) queries against (N, D) keys; query i's positive is key offset + i."""
    q, k = F.normalize(queries, dim=-1), F.normalize(keys, dim=-1)
    logits = q @ k.t() / TAU
    target = torch.arange(queries.shape[0]) + offset
    return F.cross_entropy(logits, target)


def _worker(out_dir: Path) -> None:
    info = init_distributed("cpu")
    rank = info.rank
    assert (info.world_size, get_world_size(), get_rank()) == (WORLD, WORLD, rank)
    assert torch.distributed.get_backend() == "gloo"
    x_all, y_all = _data()
    sl = slice(rank * LOCAL_B, (rank + 1) * LOCAL_B)

    # 1) DDP: gradients averaged over ranks
    model = _model()
    ddp = wrap_ddp(model, info)
    assert isinstance(ddp, nn.parallel.DistributedDataParallel) and unwrap_model(ddp) is model
    F.cross_entropy(ddp(x_all[sl]), y_all[sl]).backward()
    ddp_grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    # 2) all_gather_with_grad: local queries against the global batch of keys
    x = x_all[sl].clone().requires_grad_(True)
    w = _proj().requires_grad_(True)
    z = x @ w  # (B, 5)
    keys = all_gather_with_grad(z)  # (WORLD * B, 5)
    loss = _info_nce(z, keys, offset=rank * LOCAL_B)
    loss.backward()

    # 3) the small collectives
    summed = all_reduce_sum(torch.tensor([float(rank + 1)]))
    mean = all_reduce_mean(torch.tensor([float(rank + 1)]))
    objs = all_gather_object({"rank": rank})
    barrier()
    torch.save(
        {
            "ddp_grads": ddp_grads,
            "keys": keys.detach(),
            "x_grad": x.grad,
            "w_grad_mean": all_reduce_mean(w.grad),
            "loss": loss.detach(),
            "sum": summed,
            "mean": mean,
            "objs": objs,
            "is_main": is_main_process(),
        },
        out_dir / f"rank{rank}.pt",
    )
    cleanup_distributed()


@pytest.mark.distributed
def test_two_process_gloo_matches_single_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        __file__,
        "--worker",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    x_all, y_all = _data()
    # Reference 1: one process, the whole batch, mean loss.
    model = _model()
    F.cross_entropy(model(x_all), y_all).backward()
    for n, p in model.named_parameters():
        for r in range(WORLD):
            torch.testing.assert_close(res[r]["ddp_grads"][n], p.grad, rtol=1e-5, atol=1e-6, msg=n)

    # Reference 2: InfoNCE over the global batch, gathered keys = all rows.
    x = x_all.clone().requires_grad_(True)
    w = _proj().requires_grad_(True)
    z = x @ w
    loss = _info_nce(z, z, offset=0)  # mean over all WORLD * B queries = mean of the rank losses
    loss.backward()
    for r in range(WORLD):
        torch.testing.assert_close(res[r]["keys"], z.detach())  # gathered in rank order
    torch.testing.assert_close(sum(res[r]["loss"] for r in range(WORLD)) / WORLD, loss.detach())
    # Each rank's slice receives the sum over ranks of d(loss_r)/d(slice): WORLD x the gradient
    # of the global mean loss (DDP's averaging then divides by WORLD again).
    x_grad = torch.cat([res[r]["x_grad"] for r in range(WORLD)])
    torch.testing.assert_close(x_grad, WORLD * x.grad, rtol=1e-5, atol=1e-6)
    # ...and the gradient through the other rank's keys is present: without it the grads differ.
    torch.testing.assert_close(res[0]["w_grad_mean"], w.grad, rtol=1e-5, atol=1e-6)

    assert [res[r]["sum"].item() for r in range(WORLD)] == [3.0, 3.0]
    assert [res[r]["mean"].item() for r in range(WORLD)] == [1.5, 1.5]
    assert res[1]["objs"] == [{"rank": 0}, {"rank": 1}]
    assert [res[r]["is_main"] for r in range(WORLD)] == [True, False]


def test_single_process_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(0, 1, 0, torch.device("cpu")) and info.is_main and not info.distributed
    t = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(t) is t
    assert torch.equal(all_reduce_sum(t), t.detach()) and torch.equal(all_reduce_mean(t), t.detach())
    assert all_gather_object("x") == ["x"]
    model = nn.Linear(2, 2)
    assert wrap_ddp(model, info) is model and unwrap_model(model) is model
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="torchrun"):
        init_distributed("cpu")


def test_seed_everything_offsets_by_rank() -> None:
    seed_everything(5, rank=0)
    a = torch.rand(4)
    seed_everything(5, rank=1)
    b = torch.rand(4)
    seed_everything(5, rank=0)
    assert torch.equal(torch.rand(4), a) and not torch.equal(a, b)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        sys.exit("usage: torchrun --nproc_per_node 2 test_engine_distributed.py --worker OUT_DIR")
