"""DINO under DDP (2 gloo processes on CPU): the centre is the mean over the global batch and stays
identical on every rank, and so does the EMA teacher after an update."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
WORLD, LOCAL_B = 2, 2


def _setup():
    sys.path.insert(0, str(REPO))
    from pretrain.config import DinoConfig, ModelConfig  # noqa: PLC0415
    from pretrain.methods import build_encoder, build_method  # noqa: PLC0415

    model_cfg = ModelConfig(method="dino", arch="vit_tiny", embed_dim=64, depth=2, num_heads=2, drop_path=0.0)
    torch.manual_seed(0)
    model = build_method(
        model_cfg,
        build_encoder(model_cfg, 32),
        None,
        DinoConfig(out_dim=32, hidden_dim=32, bottleneck_dim=16),
    )
    g = torch.Generator().manual_seed(1)
    batch = {
        "global_crops": torch.randn(WORLD * LOCAL_B, 2, 3, 32, 32, generator=g),
        "local_crops": torch.randn(WORLD * LOCAL_B, 2, 3, 16, 16, generator=g),
    }
    return model, batch


def _worker(out_dir: Path) -> None:
    sys.path.insert(0, str(REPO))
    from engine.distributed import cleanup_distributed, init_distributed, wrap_ddp  # noqa: PLC0415
    from engine.optim import build_adamw  # noqa: PLC0415

    info = init_distributed("cpu")
    model, batch = _setup()
    local = {k: v[info.rank * LOCAL_B : (info.rank + 1) * LOCAL_B] for k, v in batch.items()}
    ddp = wrap_ddp(model, info, broadcast_buffers=False)  # as PretrainTask: the centre is all-reduced
    opt = build_adamw(model, lr=1e-2, weight_decay=0.04)
    ddp(local)["loss"].backward()
    model.before_update(1, 4, 1, opt)
    opt.step()
    model.after_update(1, 4, 1)
    torch.save({"center": model.center, "teacher": [p.detach() for p in model.teacher_parameters()]},
               out_dir / f"rank{info.rank}.pt")  # fmt: skip
    cleanup_distributed()


@pytest.mark.distributed
def test_centre_is_all_reduced_and_ranks_stay_identical(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           __file__, "--worker", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    model, batch = _setup()
    teacher = model._teacher_logits(batch["global_crops"])  # (2, WORLD * B, K): the global batch
    expected = 0.1 * teacher.reshape(-1, teacher.shape[-1]).mean(0, keepdim=True)  # centre started at 0
    for r in range(WORLD):
        torch.testing.assert_close(res[r]["center"], expected, rtol=1e-5, atol=1e-6)
    for a, b in zip(res[0]["teacher"], res[1]["teacher"]):
        assert torch.equal(a, b)
    # The teacher moved (the student's update reached it) and equals a single process's update on
    # the whole batch (DDP averages the two halves' gradients).
    from engine.optim import build_adamw  # noqa: PLC0415

    opt = build_adamw(model, lr=1e-2, weight_decay=0.04)
    losses = []
    for r in range(WORLD):
        half = {k: v[r * LOCAL_B : (r + 1) * LOCAL_B] for k, v in batch.items()}
        model.center.zero_()  # each rank's loss used the centre before the step (0)
        losses.append(model(half)["loss"] / WORLD)
    sum(losses).backward()
    model.before_update(1, 4, 1, opt)
    opt.step()
    model.after_update(1, 4, 1)
    for a, b in zip(res[0]["teacher"], model.teacher_parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-6)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        sys.exit("usage: torchrun --nproc_per_node 2 test_pretrain_dino_ddp.py --worker OUT_DIR")
