"""FSDP2 through the shared trainer on 2 gloo processes (CPU) against DDP: the same losses and
gradient norms (accumulation, clipping), activation checkpointing changes nothing, sharded (DCP)
checkpoints resume exactly in 2 processes and load into 1, consolidate to one file, and the
encoder export at the end holds the full weights.

One torchrun job (``--worker``) runs every training run of this file in sequence (the process
group is made once); the tests read what it wrote.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from engine.config import OptimConfig, RunConfig  # noqa: E402
from engine.distributed import barrier, get_rank  # noqa: E402
from engine.sampler import ResumableSampler  # noqa: E402
from engine.schedules import schedule_from_config, set_lr  # noqa: E402
from engine.trainer import RunContext, Task, TrainSetup, fit  # noqa: E402

WORLD, BATCH, ACCUM, STEPS, N_IMAGES = 2, 2, 2, 6, 48
PORT = 29683
LR, CLIP = 3e-3, 0.05  # the clip is below every step's norm: clipping acts on every update


@dataclasses.dataclass
class ToyViTConfig:
    stop_at_step: int | None = None
    optim: OptimConfig = dataclasses.field(default_factory=lambda: OptimConfig(lr=LR, schedule="cosine"))
    run: RunConfig = dataclasses.field(default_factory=RunConfig)


class ToyImages(Dataset):
    """(3, 32, 32) images with a 4-d regression target; sample i depends only on i."""

    def __len__(self) -> int:
        return N_IMAGES

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(1000 + i)
        return {"x": torch.randn(3, 32, 32, generator=g), "y": torch.randn(4, generator=g)}


def collate(items: list[dict]) -> dict:
    return {k: torch.stack([it[k] for it in items]) for k in ("x", "y")}


class Regressor(nn.Module):
    """A tiny ViT (depth 2, width 64, 32 px) and a linear head: (B, 3, 32, 32) -> (B, 4)."""

    def __init__(self) -> None:
        super().__init__()
        from ssl_backbones import create_vit  # noqa: PLC0415

        self.encoder = create_vit("vit_tiny", embed_dim=64, depth=2, num_heads=2, img_size=32, patch_size=8)
        self.head = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def build_model() -> Regressor:
    torch.manual_seed(0)  # the same initial weights on every rank and in the tests
    return Regressor()


def loss_of(model: nn.Module, batch: dict) -> torch.Tensor:
    return nn.functional.mse_loss(model(batch["x"]), batch["y"])


class ToyViTTask(Task):
    name = "toy_vit"
    run_length_keys = ("stop_at_step",)

    def __init__(self, cfg: ToyViTConfig) -> None:
        self.cfg = cfg

    def build(self, ctx: RunContext) -> TrainSetup:
        from engine.optim import build_adamw  # noqa: PLC0415

        model = build_model().to(ctx.device)
        data = ToyImages()
        return TrainSetup(
            config=self.cfg, model=model, optimizer=build_adamw(model, LR, weight_decay=0.05),
            dataset=data, sampler=ResumableSampler(len(data), seed=self.cfg.run.seed), collate_fn=collate,
            batch_size=BATCH, total_steps=STEPS, steps_per_epoch=N_IMAGES // (WORLD * BATCH * ACCUM),
            schedule=schedule_from_config(self.cfg.optim, STEPS), base_lr=LR, accum_iter=ACCUM, clip_grad=CLIP,
            stop_at_step=self.cfg.stop_at_step,
        )  # fmt: skip

    def step(self, model, batch, ctx):
        return {"loss": loss_of(model, batch)}

    def on_end(self, model, ctx, finished):
        from ssl_backbones import export_encoder  # noqa: PLC0415

        if finished and ctx.info.is_main:
            export_encoder(model.encoder, ctx.run_dir / "encoder", {"method": "test"})
        return {}


def _config(out: Path, **run) -> ToyViTConfig:
    stop = run.pop("stop_at_step", None)
    rc = RunConfig(output_dir=str(out), device="cpu", log_every=1, ckpt_every_steps=3, keep_last=0, **run)
    return ToyViTConfig(stop_at_step=stop, run=rc)


def _worker(out: Path) -> None:
    runs = {
        "ddp": {},
        "fsdp": {"parallel": "fsdp"},
        "fsdp_ac": {"parallel": "fsdp", "activation_checkpointing": True},
        "fsdp_cut": {"parallel": "fsdp", "stop_at_step": 3},
        "ddp_bf16": {"precision": "bf16"},
        "fsdp_bf16": {"parallel": "fsdp", "precision": "bf16"},  # bf16 gathers, fp32 reductions
    }
    for name, run in runs.items():
        fit(ToyViTTask(_config(out / name, **run)), _config(out / name, **run))
    # Across layouts: a DDP run continues from a sharded checkpoint and an FSDP run from a DDP one.
    if get_rank() == 0:
        shutil.copytree(out / "fsdp_cut", out / "dcp_to_ddp")
        (out / "ddp_to_fsdp").mkdir()
        for f in ("checkpoint_00000003.pth", "config.json", "metrics.jsonl"):
            shutil.copy(out / "ddp" / f, out / "ddp_to_fsdp" / f)
    barrier()
    for name, parallel in (("fsdp_cut", "fsdp"), ("dcp_to_ddp", "ddp"), ("ddp_to_fsdp", "fsdp")):
        resumed = _config(out / name, parallel=parallel, resume="auto")
        fit(ToyViTTask(resumed), resumed)


def _launch(out: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}", f"--master_port={PORT}",
           __file__, "--worker", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    _launch(out)
    return out


def _records(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_gives_ddps_losses_and_grad_norms(runs: Path) -> None:
    ddp, fsdp = _records(runs / "ddp"), _records(runs / "fsdp")
    assert sorted(ddp) == sorted(fsdp) == list(range(1, STEPS + 1))
    for step in ddp:
        assert fsdp[step]["loss"] == pytest.approx(ddp[step]["loss"], rel=1e-5)
        assert fsdp[step]["grad_norm"] == pytest.approx(ddp[step]["grad_norm"], rel=1e-5)
        assert ddp[step]["grad_norm"] > CLIP  # so every update was clipped, in both
    assert ddp[STEPS]["loss"] < ddp[1]["loss"]
    # Sharded checkpoints, and the full encoder exported by rank 0 equals DDP's.
    assert (runs / "fsdp" / "checkpoint_00000003.dcp" / ".metadata").is_file()
    assert not list((runs / "fsdp").glob("checkpoint_*.pth")) and not list((runs / "fsdp").glob(".*.tmp"))
    from safetensors.torch import load_file  # noqa: PLC0415

    a, b = load_file(runs / "ddp" / "encoder.safetensors"), load_file(runs / "fsdp" / "encoder.safetensors")
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        # AdamW's steps are +-lr wherever a gradient is tiny, so rounding differences in the
        # reductions show as ~1e-5 there: tolerance 1% of one step.
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=0.01 * LR)


@pytest.mark.slow
@pytest.mark.distributed
def test_activation_checkpointing_changes_no_loss(runs: Path) -> None:
    plain, ac = _records(runs / "fsdp"), _records(runs / "fsdp_ac")
    for step in plain:
        assert ac[step]["loss"] == pytest.approx(plain[step]["loss"], rel=1e-6)
        assert ac[step]["grad_norm"] == pytest.approx(plain[step]["grad_norm"], rel=1e-6)


@pytest.mark.slow
@pytest.mark.distributed
def test_sharded_checkpoint_resumes_exactly_in_two_processes(runs: Path) -> None:
    full, cut = _records(runs / "fsdp"), _records(runs / "fsdp_cut")
    assert sorted(cut) == list(range(1, STEPS + 1))  # steps 1-3, then 4-6 after the resume
    for step in range(1, STEPS + 1):
        assert cut[step]["loss"] == pytest.approx(full[step]["loss"], rel=1e-6), step


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_and_fsdp_continue_each_others_checkpoints(runs: Path) -> None:
    # ddp_to_fsdp: FSDP from checkpoint_00000003.pth (full tensors sharded on load); dcp_to_ddp:
    # DDP from checkpoint_00000003.dcp (shards gathered into full tensors on load).
    ddp, fsdp = _records(runs / "ddp"), _records(runs / "fsdp")
    for name, reference in (("ddp_to_fsdp", ddp), ("dcp_to_ddp", fsdp)):
        continued = _records(runs / name)
        for step in range(4, STEPS + 1):
            assert continued[step]["loss"] == pytest.approx(reference[step]["loss"], rel=1e-5), (name, step)
    assert (runs / "dcp_to_ddp" / "checkpoint_00000006.pth").is_file()
    assert (runs / "ddp_to_fsdp" / "checkpoint_00000006.dcp").is_dir()


def test_activation_checkpointing_recomputes_each_block_and_keeps_the_gradients() -> None:
    from engine.sharding import checkpoint_blocks, transformer_blocks  # noqa: PLC0415
    from ssl_backbones import create_vit  # noqa: PLC0415

    def grads_and_calls(ac: bool) -> tuple[list[torch.Tensor], int]:
        torch.manual_seed(0)
        enc = create_vit("vit_tiny", embed_dim=64, depth=2, num_heads=2, img_size=32, patch_size=8,
                         drop_path_rate=0.3)  # random per forward: the recomputation must replay it
        blocks = transformer_blocks(enc)
        assert blocks == list(enc.blocks)
        calls = []
        for b in blocks:
            b.attn.register_forward_hook(lambda *_: calls.append(1))
        if ac:
            checkpoint_blocks(blocks)
        torch.manual_seed(1)
        enc(torch.randn(4, 3, 32, 32)).square().mean().backward()
        return [p.grad for p in enc.parameters() if p.grad is not None], len(calls)

    plain, plain_calls = grads_and_calls(False)
    ckpt, ckpt_calls = grads_and_calls(True)
    assert (plain_calls, ckpt_calls) == (2, 4)  # each block's forward ran again in backward
    assert len(plain) == len(ckpt) > 10 and all(torch.equal(a, b) for a, b in zip(plain, ckpt))
    names = [n for n, _ in create_vit("vit_tiny", depth=2).named_parameters()]
    enc = create_vit("vit_tiny", depth=2)
    checkpoint_blocks(transformer_blocks(enc))
    assert [n for n, _ in enc.named_parameters()] == names  # state dicts keep their keys


@pytest.mark.slow
@pytest.mark.distributed
def test_bf16_fsdp_follows_bf16_ddp(runs: Path) -> None:
    # DDP casts inside autocast from fp32 weights, FSDP gathers bf16 weights: the same to bf16's
    # precision (8 bits of mantissa), not bit for bit.
    ddp, fsdp, fp32 = _records(runs / "ddp_bf16"), _records(runs / "fsdp_bf16"), _records(runs / "fsdp")
    for step in ddp:
        assert fsdp[step]["loss"] == pytest.approx(ddp[step]["loss"], rel=2e-2)
    assert fsdp[STEPS]["loss"] < fsdp[1]["loss"] and fsdp[1]["loss"] != fp32[1]["loss"]
    assert json.loads((runs / "fsdp_bf16" / "config.json").read_text())["run"]["precision"] == "bf16"


def test_incomplete_sharded_folders_are_skipped_and_killed_saves_removed(tmp_path: Path, ssl_log) -> None:
    from engine.checkpoint import STATE_FILE, CheckpointError, CheckpointManager, find_resume_checkpoint  # noqa: PLC0415

    run = tmp_path / "run"
    for step, files in ((2, (".metadata", STATE_FILE)), (4, (STATE_FILE,))):  # step 4 lost its metadata
        (run / f"checkpoint_{step:08d}.dcp").mkdir(parents=True)
        for f in files:
            (run / f"checkpoint_{step:08d}.dcp" / f).write_bytes(b"x")
    (run / ".checkpoint_00000006.dcp.tmp").mkdir()  # a save killed before its rename
    assert find_resume_checkpoint("auto", run).name == "checkpoint_00000002.dcp"
    assert "without .metadata" in ssl_log.text
    with pytest.raises(CheckpointError, match="without .metadata"):
        find_resume_checkpoint(str(run / "checkpoint_00000004.dcp"), run)
    manager = CheckpointManager(run, sharded=True)
    assert not (run / ".checkpoint_00000006.dcp.tmp").exists()
    assert manager.path_for(8).name == "checkpoint_00000008.dcp" and manager.path_named("best").name == "best.dcp"
    assert [p.name for p in manager.checkpoints()] == ["checkpoint_00000002.dcp", "checkpoint_00000004.dcp"]


def test_fsdp_without_torchrun_is_a_message_before_anything_is_written(tmp_path: Path) -> None:
    from engine.config import ConfigError  # noqa: PLC0415

    cfg = _config(tmp_path / "run", parallel="fsdp")
    with pytest.raises(ConfigError, match=r"needs a process group: launch with torchrun"):
        fit(ToyViTTask(cfg), cfg)
    assert not (tmp_path / "run").exists()


def _union_batch(step: int) -> dict:
    """Every micro-batch of every rank of update ``step`` (0-based): what one process must see."""
    data, items = ToyImages(), []
    for rank in range(WORLD):
        order = ResumableSampler(N_IMAGES, seed=0, rank=rank, world_size=WORLD).epoch_indices()
        items += [data[i] for i in order[step * ACCUM * BATCH : (step + 1) * ACCUM * BATCH]]
    return collate(items)


@pytest.mark.slow
@pytest.mark.distributed
def test_sharded_checkpoint_loads_in_one_process_and_continues_with_the_same_losses(runs: Path) -> None:
    from engine.checkpoint import find_resume_checkpoint, load_checkpoint  # noqa: PLC0415
    from engine.optim import build_adamw, clip_grad  # noqa: PLC0415
    from engine.sharded_checkpoint import consolidate, load_sharded  # noqa: PLC0415

    path = runs / "fsdp_cut" / "checkpoint_00000003.dcp"
    assert find_resume_checkpoint("auto", runs / "fsdp_cut").name == "checkpoint_00000006.dcp"
    model = build_model()
    opt = build_adamw(model, LR, weight_decay=0.05)
    load_sharded(path, model, opt)  # no process group: full tensors from 2 processes' shards
    side = load_checkpoint(path)
    assert side["step"] == 3 and len(side["rng"]) == WORLD and side["sampler"]["world_size"] == WORLD
    # The consolidated file holds the same weights and optimizer state, in the ordinary format.
    flat = load_checkpoint(consolidate(path, runs / "consolidated.pth"))
    twin, twin_opt = build_model(), build_adamw(build_model(), LR, weight_decay=0.05)
    twin.load_state_dict(flat["model"])
    twin_opt = build_adamw(twin, LR, weight_decay=0.05)
    twin_opt.load_state_dict(flat["optimizer"])
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)
    assert flat["step"] == 3 and opt.state_dict()["state"][0]["step"] == twin_opt.state_dict()["state"][0]["step"] == 3
    # One process on the union of both ranks' batches continues the 2-process run's losses.
    full, schedule = _records(runs / "fsdp"), schedule_from_config(OptimConfig(lr=LR, schedule="cosine"), STEPS)
    for step in (3, 4):
        batch = _union_batch(step)
        loss = loss_of(model, batch)
        assert loss.item() == pytest.approx(full[step + 1]["loss"], rel=1e-5), step
        set_lr(opt, LR, schedule(step))
        loss.backward()
        assert clip_grad(model.parameters(), CLIP).item() == pytest.approx(full[step + 1]["grad_norm"], rel=1e-4)
        opt.step()
        opt.zero_grad(set_to_none=True)


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker(Path(sys.argv[sys.argv.index("--worker") + 1]))
