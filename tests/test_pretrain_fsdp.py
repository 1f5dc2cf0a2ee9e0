"""Every pretraining method sharded with FSDP2 (2 gloo processes, CPU) against the same model under
DDP in the same processes: equal losses, gradient norms and final weights over a few updates with
each method's hooks (DINO: frozen prototypes, weight-decay schedule, EMA teacher on DTensor shards,
all-reduced centre)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
WORLD, LOCAL_B, STEPS, PORT = 2, 2, 3, 29684
METHODS = ("splitmask", "beit", "mae", "dino")
TINY = dict(arch="vit_tiny", embed_dim=64, depth=2, num_heads=2, mae_decoder_dim=32, mae_decoder_depth=1,
            mae_decoder_heads=2, drop_path=0.1)  # fmt: skip


def _model(method: str) -> torch.nn.Module:
    from pretrain.config import DinoConfig, ModelConfig  # noqa: PLC0415
    from pretrain.methods import build_encoder, build_method  # noqa: PLC0415
    from pretrain.tokenizers import build_tokenizer  # noqa: PLC0415

    torch.manual_seed(0)
    cfg = ModelConfig(method=method, **TINY)
    tok = build_tokenizer("random_projection", vocab_size=64, seed=0) if method in ("splitmask", "beit") else None
    dino = DinoConfig(out_dim=32, hidden_dim=32, bottleneck_dim=16, freeze_last_layer_epochs=1)
    return build_method(cfg, build_encoder(cfg, 32 if method == "dino" else 64), tok, dino)


def _batch(method: str, rank: int, step: int) -> dict:
    """This rank's part of update ``step``'s batch (64 px, 16 px patches: a 4 x 4 grid)."""
    from pretrain.masking import BlockMasking, SplitMasking  # noqa: PLC0415

    g = torch.Generator().manual_seed(100 * step + rank)
    if method == "dino":
        return {"global_crops": torch.randn(LOCAL_B, 2, 3, 32, 32, generator=g),
                "local_crops": torch.randn(LOCAL_B, 2, 3, 16, 16, generator=g)}  # fmt: skip
    batch = {"images": torch.randn(LOCAL_B, 3, 64, 64, generator=g)}
    rng = np.random.default_rng(100 * step + rank)
    if method == "splitmask":
        outs = [SplitMasking((4, 4))(rng) for _ in range(LOCAL_B)]
        batch.update(ids_a=torch.stack([o["ids_a"] for o in outs]), ids_b=torch.stack([o["ids_b"] for o in outs]))
    elif method == "beit":
        batch["mask"] = torch.stack([BlockMasking((4, 4))(rng)["mask"] for _ in range(LOCAL_B)])
    return batch


def _train(model: torch.nn.Module, core: torch.nn.Module, opt: torch.optim.Optimizer, method: str,
           rank: int) -> list[tuple[float, float]]:
    """STEPS updates of ``model`` (DDP or FSDP around ``core``); (mean loss, grad norm) of each."""
    from engine.distributed import all_reduce_mean  # noqa: PLC0415
    from engine.optim import clip_grad  # noqa: PLC0415

    out = []
    for step in range(STEPS):
        torch.manual_seed(10 * step + rank)  # the same drop-path / MAE masks under DDP and FSDP
        loss = model(_batch(method, rank, step))["loss"]
        loss.backward()
        if hasattr(core, "before_update"):
            core.before_update(step, STEPS, 1, opt)
        norm = clip_grad([p for p in core.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if hasattr(core, "after_update"):
            core.after_update(step, STEPS, 1)
        out.append((all_reduce_mean(loss.detach()).item(), float(norm)))
    return out


def _worker(out_dir: Path) -> None:
    sys.path.insert(0, str(REPO))
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict  # noqa: PLC0415

    from engine.distributed import cleanup_distributed, init_distributed, wrap_ddp  # noqa: PLC0415
    from engine.optim import build_adamw  # noqa: PLC0415
    from engine.sharding import rebind_optimizer, shard_model  # noqa: PLC0415

    info = init_distributed("cpu")
    results = {}
    for method in METHODS:
        base = _model(method)
        plain, sharded = copy.deepcopy(base), copy.deepcopy(base)
        opt = build_adamw(plain, 1e-3, weight_decay=0.05)
        ddp_log = _train(wrap_ddp(plain, info, broadcast_buffers=False), plain, opt, method, info.rank)
        opt, names = build_adamw(sharded, 1e-3, weight_decay=0.05), {id(p): n for n, p in sharded.named_parameters()}
        shard_model(sharded, info, "fp32")  # as the trainer: the optimizer was built before sharding
        rebind_optimizer(opt, names, sharded)
        fsdp_log = _train(sharded, sharded, opt, method, info.rank)
        full = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        results[method] = {"ddp": ddp_log, "fsdp": fsdp_log, "ddp_state": plain.state_dict(), "fsdp_state": full,
                           "local_is_shard": any(hasattr(p, "to_local") for p in sharded.parameters())}  # fmt: skip
    if info.is_main:
        torch.save(results, out_dir / "results.pt")
    cleanup_distributed()


# The pretraining loop itself: a data-dependent tokenizer (its vocabulary comes back from the
# sharded checkpoint's side file), accumulation, drop path, block masks.
LOOP = ["model.arch=vit_tiny", "model.embed_dim=64", "model.depth=2", "model.num_heads=2", "data.img_size=32",
        "data.max_images=32", "data.num_workers=0", "schedule.batch_size=4", "schedule.accum_iter=2",
        "schedule.epochs=2", "schedule.blr=0.01", "run.log_every=1", "run.ckpt_every_steps=100",
        "tokenizer.kind=random_patches", "tokenizer.vocab_size=32", "tokenizer.num_samples=64", "run.device=cpu"]


def _loop_worker(out: Path) -> None:
    sys.path.insert(0, str(REPO))
    from engine.config import apply_overrides  # noqa: PLC0415
    from pretrain.config import default_config  # noqa: PLC0415
    from pretrain.loop import train  # noqa: PLC0415

    base = apply_overrides(default_config("splitmask", "demo"), LOOP)
    for name, sets in (("ddp", []), ("fsdp_cut", ["run.parallel=fsdp", "schedule.stop_at_step=2"]),
                       ("fsdp_cut", ["run.parallel=fsdp", "run.resume=auto"])):  # fmt: skip
        train(apply_overrides(base, [f"run.output_dir={out / name}", *sets]))


def _launch(out: Path, mode: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}", f"--master_port={PORT}",
           __file__, mode, str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("pretrain_fsdp")
    _launch(out, "--worker")
    return torch.load(out / "results.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.distributed
def test_pretraining_loop_under_fsdp_resumes_and_exports_the_full_encoder(tmp_path: Path, demo_coco: Path) -> None:
    import json  # noqa: PLC0415

    from engine.sharded_checkpoint import consolidate  # noqa: PLC0415
    from ssl_backbones import load_exported_encoder  # noqa: PLC0415

    _launch(tmp_path, "--loop-worker")

    def losses(run: str) -> list[float]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if "loss" in r]

    assert len(losses("ddp")) == 4
    assert losses("fsdp_cut") == pytest.approx(losses("ddp"), rel=1e-5)  # 2 steps, resumed, 2 more
    flat = torch.load(consolidate(tmp_path / "fsdp_cut" / "checkpoint_00000004.dcp", tmp_path / "c.pth"),
                      weights_only=True)  # fmt: skip
    assert flat["model"]["tokenizer.vocab"].shape[0] == 32  # the run's vocabulary, a buffer
    encoder = load_exported_encoder(tmp_path / "fsdp_cut" / "encoder.safetensors")
    for k, v in encoder.state_dict().items():  # the export holds the final, full weights
        assert torch.equal(v, flat["model"][f"encoder.{k}"]), k


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("method", METHODS)
def test_method_under_fsdp_equals_ddp(results: dict, method: str) -> None:
    r = results[method]
    assert r["local_is_shard"]
    for (l_ddp, n_ddp), (l_fsdp, n_fsdp) in zip(r["ddp"], r["fsdp"]):
        assert l_fsdp == pytest.approx(l_ddp, rel=1e-5) and n_fsdp == pytest.approx(n_ddp, rel=1e-4)
    assert r["ddp"][-1][0] != r["ddp"][0][0]  # it trained
    a, b = r["ddp_state"], r["fsdp_state"]
    assert a.keys() == b.keys()
    # Teacher (DINO's EMA), centre, student: all equal. Tolerance 3% of one AdamW step (lr 1e-3):
    # the key bias's gradient is rounding noise (softmax ignores a shift shared by every key), and
    # AdamW turns any noise into a +-lr step.
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=3e-5, msg=k)
    if method == "dino":
        teacher = [k for k in a if k.startswith("encoder.blocks.0.")]
        base = _model("dino").state_dict()
        assert teacher and any(not torch.equal(a[k], base[k]) for k in teacher)  # the EMA moved it


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker(Path(sys.argv[sys.argv.index("--worker") + 1]))
if __name__ == "__main__" and "--loop-worker" in sys.argv:
    _loop_worker(Path(sys.argv[sys.argv.index("--loop-worker") + 1]))
