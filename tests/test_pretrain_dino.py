"""DINO: teacher EMA and gradients, centring, the multi-crop loss, schedules, collapse, resume;
and the data subsets (`--data-fraction`, `--data-list`)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.config import ConfigError, apply_overrides
from engine.optim import build_adamw
from pretrain.config import DinoConfig, ModelConfig, default_config
from pretrain.data import list_images, select_subset
from pretrain.loop import build_dataset, make_plan, train
from pretrain.methods import build_encoder, build_method
from pretrain.methods.dino import DINO, dino_cross_entropy
from ssl_backbones import load_encoder_weights
from ssl_backbones.vit import create_vit

REPO = Path(__file__).resolve().parents[1]
K = 32
TINY_MODEL = ModelConfig(method="dino", arch="vit_tiny", embed_dim=64, depth=2, num_heads=2, drop_path=0.0)
TINY_DINO = DinoConfig(out_dim=K, hidden_dim=32, bottleneck_dim=16)
TINY_RUN = [
    "model.arch=vit_tiny",
    "model.embed_dim=64",
    "model.depth=2",
    "model.num_heads=2",
    "data.img_size=32",
    "data.num_workers=0",
    "dino.local_crop_size=16",
    "dino.local_crops_number=2",
    "dino.out_dim=64",
    "dino.hidden_dim=32",
    "dino.bottleneck_dim=16",
    "run.ckpt_every_steps=100",
    "run.log_every=1",
]


def _dino(seed: int = 0) -> DINO:
    torch.manual_seed(seed)
    return build_method(TINY_MODEL, build_encoder(TINY_MODEL, 32), None, TINY_DINO, weight_decay=0.04)


def _batch(B: int = 3, L: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "global_crops": torch.randn(B, 2, 3, 32, 32, generator=g),
        "local_crops": torch.randn(B, L, 3, 16, 16, generator=g),
    }


def test_teacher_gets_no_gradient_and_follows_the_ema_formula() -> None:
    model = _dino()
    opt = build_adamw(model, lr=1e-2, weight_decay=0.04)
    in_optimizer = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in model.teacher_parameters())
    model(_batch())["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in model.teacher_parameters())
    assert all(p.grad is not None for p in model.student_parameters() if p.requires_grad)
    opt.step()  # the student moves away from the teacher
    teacher_before = [p.detach().clone().double() for p in model.teacher_parameters()]
    student = [p.detach().clone().double() for p in model.student_parameters()]
    trainable = [p.requires_grad for p in model.student_parameters()]
    step, total = 3, 10
    m = 1 - (1 - 0.996) * (math.cos(math.pi * step / total) + 1) / 2  # DINO's cosine 0.996 -> 1
    assert model.teacher_momentum_at(step, total) == pytest.approx(m, abs=1e-15)
    model.after_update(step, total, steps_per_epoch=5)
    for t0, s, t1, train_ in zip(teacher_before, student, model.teacher_parameters(), trainable):
        expected = m * t0 + (1 - m) * s if train_ else t0  # fixed tensors (g = 1, sin-cos) stay
        torch.testing.assert_close(t1.double(), expected, rtol=0, atol=1e-7)
    assert model.teacher_momentum_at(total, total) == 1.0 and model.teacher_momentum_at(0, total) == 0.996


def test_center_update_equals_its_formula_and_the_loss_uses_the_old_centre() -> None:
    model = _dino()
    c0 = torch.randn(1, K)
    model.center.copy_(c0)
    batch = _batch()
    teacher = model._teacher_logits(batch["global_crops"])  # (2, B, K)
    out = model(batch)
    expected = 0.9 * c0 + 0.1 * teacher.reshape(-1, K).mean(0, keepdim=True)
    torch.testing.assert_close(model.center, expected, rtol=0, atol=1e-6)
    # The loss was computed with c0, not the updated centre.
    probs = F.softmax((teacher - c0) / 0.04, dim=-1)
    student = model._student_logits(batch["global_crops"], batch["local_crops"])
    assert out["loss"].item() == pytest.approx(dino_cross_entropy(student, probs, 0.1).item(), rel=1e-6)


def _loop_loss(student_views: list[torch.Tensor], teacher_views: list[torch.Tensor], center, t_s, t_t):
    """DINO's reference loss as an explicit loop over (teacher view, student view) pairs."""
    total, pairs = 0.0, 0
    for iq, t in enumerate(teacher_views):
        q = F.softmax((t - center) / t_t, dim=-1)
        for v, s in enumerate(student_views):
            if v == iq:
                continue  # the same crop
            total += torch.sum(-q * F.log_softmax(s / t_s, dim=-1), dim=-1).mean()
            pairs += 1
    return total / pairs


def test_loss_equals_an_explicit_loop_over_view_pairs() -> None:
    model = _dino()
    model.center.copy_(torch.randn(1, K) * 0.1)
    batch = _batch(B=3, L=2)
    # Every view separately through the networks (the method batches them per resolution).
    views = [batch["global_crops"][:, i] for i in range(2)] + [batch["local_crops"][:, i] for i in range(2)]
    with torch.no_grad():
        student = [model.student_head(model.student_encoder(v)) for v in views]
        teacher = [model.teacher_head(model.encoder(v)) for v in views[:2]]
        expected = _loop_loss(student, teacher, model.center.clone(), 0.1, 0.04)
        got = model(batch)["loss"]
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # Without local crops: 2 views, the 2 cross pairs only.
    s2, t2 = torch.randn(2, 4, K), torch.randn(2, 4, K).softmax(-1)
    loop = sum(torch.sum(-t2[a] * F.log_softmax(s2[b] / 0.1, -1), -1).mean() for a, b in ((0, 1), (1, 0))) / 2
    assert dino_cross_entropy(s2, t2, 0.1).item() == pytest.approx(loop.item(), rel=1e-6)


def test_schedules_frozen_prototypes_and_weight_decay() -> None:
    model = DINO(
        create_vit("vit_tiny", embed_dim=64, depth=2, num_heads=2, img_size=32),
        out_dim=K, hidden_dim=32, bottleneck_dim=16, teacher_temp=0.07, warmup_teacher_temp=0.04,
        warmup_teacher_temp_epochs=4, freeze_last_layer_epochs=1,
    )  # fmt: skip
    ramp = np.linspace(0.04, 0.07, 4)  # DINO's per-epoch warm-up
    assert [model.teacher_temp_at(e * 5, 5) for e in range(6)] == pytest.approx([*ramp, 0.07, 0.07])
    opt = build_adamw(model, lr=1e-3, weight_decay=0.04)
    decayed = [g["weight_decay"] > 0 for g in opt.param_groups]
    last = model.student_head.last_layer.parametrizations.weight.original1
    for step, frozen in ((4, True), (5, False)):  # 5 steps per epoch: step 5 is epoch 1
        model(_batch())["loss"].backward()
        model.before_update(step, total_steps=20, steps_per_epoch=5, optimizer=opt)
        assert (last.grad is None) == frozen
        wd = 0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * step / 20))
        assert [g["weight_decay"] for g in opt.param_groups] == pytest.approx(
            [wd if d else 0.0 for d in decayed]
        )
        opt.zero_grad()
    model.after_update(4, 20, 5)
    assert model.temp.item() == pytest.approx(ramp[1])  # the next step (5) is in epoch 1


def _demo_cfg(out: Path, extra: list[str]):
    return apply_overrides(default_config("dino", "demo"), TINY_RUN + [f"run.output_dir={out}", *extra])


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("center_momentum", [0.9, 1.0])
def test_short_run_on_demo_data_does_not_collapse(tmp_path: Path, center_momentum: float) -> None:
    # 10 updates at a high lr. With centring the teacher's per-image entropy stays between the two
    # collapses; without it (momentum 1: the centre stays 0) the same run falls towards one-hot.
    extra = ["data.max_images=16", "schedule.batch_size=8", "schedule.epochs=5", "schedule.blr=0.5",
             "dino.local_crops_number=1", f"dino.center_momentum={center_momentum}"]  # fmt: skip
    train(_demo_cfg(tmp_path, extra))
    entropy = [r["teacher_entropy"] for r in _metrics(tmp_path)]
    log_k = math.log(64)
    assert len(entropy) == 10
    assert max(entropy[-4:]) < 0.9 * log_k, entropy  # not uniform (log K = 4.16)
    if center_momentum < 1:
        assert min(entropy) > 0.1 * log_k, entropy  # not one-hot
    else:
        assert min(entropy) < 0.1 * log_k, entropy  # the check can fail: this run collapses


@pytest.mark.slow
def test_resume_continues_bit_for_bit_teacher_and_centre_included(tmp_path: Path) -> None:
    extra = ["data.max_images=8", "schedule.batch_size=2", "schedule.epochs=2", "schedule.accum_iter=2",
             "schedule.blr=0.05", "model.drop_path=0.1", "dino.warmup_teacher_temp_epochs=2",
             "dino.teacher_temp=0.07"]  # fmt: skip
    full = train(_demo_cfg(tmp_path / "full", extra))
    stopped = train(_demo_cfg(tmp_path / "part", [*extra, "schedule.stop_at_step=1"]))
    assert stopped["step"] == 1 and stopped["encoder"] is None
    resumed = train(_demo_cfg(tmp_path / "part", [*extra, "run.resume=auto"]))
    assert resumed["step"] == full["step"] == 4
    a = torch.load(full["checkpoint"], weights_only=True)
    b = torch.load(resumed["checkpoint"], weights_only=True)
    assert {"center", "temp", "encoder.cls_token", "teacher_head.mlp.0.weight"} <= set(a["model"])
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["model"]["temp"].item() == pytest.approx(0.07)  # the warm-up reached its end
    assert [g["weight_decay"] for g in a["optimizer"]["param_groups"]] == [
        g["weight_decay"] for g in b["optimizer"]["param_groups"]
    ]
    assert [r["loss"] for r in _metrics(tmp_path / "full")] == [
        r["loss"] for r in _metrics(tmp_path / "part")
    ]
    # The exported encoder is the teacher's backbone.
    enc = create_vit("vit_tiny", embed_dim=64, depth=2, num_heads=2, img_size=32)
    load_encoder_weights(enc, tmp_path / "full" / "encoder.safetensors", strict=True)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, a["model"][f"encoder.{k}"]), k
    assert not torch.equal(
        a["model"]["encoder.blocks.0.attn.qkv.weight"], a["model"]["student_encoder.blocks.0.attn.qkv.weight"]
    )


def test_multicrop_views_are_seeded_per_sample(demo_coco: Path) -> None:
    cfg = _demo_cfg(Path("unused"), ["data.max_images=4"])
    ds = build_dataset(cfg)
    first, again = ds[1], ds[1]
    assert first["global_crops"].shape == (2, 3, 32, 32) and first["local_crops"].shape == (2, 3, 16, 16)
    assert torch.equal(first["global_crops"], again["global_crops"])
    assert torch.equal(first["local_crops"], again["local_crops"])
    assert not torch.equal(first["global_crops"][0], first["global_crops"][1])  # two different crops
    ds.set_epoch(1)
    assert not torch.equal(ds[1]["global_crops"], first["global_crops"])
    with pytest.raises(ConfigError, match="multiples of the patch size"):
        build_dataset(apply_overrides(cfg, ["dino.local_crop_size=20"]))


def test_subsets_are_deterministic_and_recorded(tmp_path: Path, demo_coco: Path) -> None:
    files = list_images("demo")
    one = select_subset(files, demo_coco, fraction=0.1, seed=3)
    assert len(one) == round(0.1 * len(files)) and one == sorted(one) and set(one) <= set(files)
    assert one == select_subset(files, demo_coco, fraction=0.1, seed=3)
    assert one != select_subset(files, demo_coco, fraction=0.1, seed=4)
    listing = tmp_path / "subset.txt"
    # By relative path, by absolute path and by file name; comments and blank lines are skipped.
    listing.write_text(f"# my subset\n{files[5].relative_to(demo_coco)}\n\n{files[2]}\n{files[9].name}\n")
    assert select_subset(files, demo_coco, file_list=listing) == [files[2], files[5], files[9]]
    listing.write_text("train2017/nope.jpg\n")
    with pytest.raises(ConfigError, match="not images of this source"):
        select_subset(files, demo_coco, file_list=listing)

    spec = importlib.util.spec_from_file_location("pretrain_cli", REPO / "tools" / "pretrain.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    args = tool.build_parser().parse_args(
        ["--method", "dino", "--data-fraction", "0.25", "--data-seed", "7", "--output-dir", str(tmp_path / "r"),
         "--set", *TINY_RUN, "schedule.batch_size=8", "schedule.stop_at_step=1"]
    )  # fmt: skip
    cfg = tool.config_from_args(args)
    ds = build_dataset(cfg)
    assert ds.files == select_subset(files, demo_coco, fraction=0.25, seed=7)
    train(cfg)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["data"]
    assert (saved["fraction"], saved["subset_seed"], saved["file_list"]) == (0.25, 7, None)
    assert make_plan(cfg, len(ds.files), 1).steps_per_epoch == len(ds.files) // 8


def test_benchmark_builds_the_multicrop_batch() -> None:
    from pretrain.benchmark import add_relative_times, local_size_for, synthetic_batch  # noqa: PLC0415

    assert local_size_for(224, 16) == 96 and local_size_for(96, 16) == 48 and local_size_for(32, 16) == 16
    batch = synthetic_batch("dino", 2, 32, 16, torch.device("cpu"), (3, 16))
    assert batch["global_crops"].shape == (2, 2, 3, 32, 32) and batch["local_crops"].shape == (
        2,
        3,
        3,
        16,
        16,
    )
    assert _dino()(batch)["loss"].ndim == 0
    rows = add_relative_times(
        [{"method": m, "arch": "a", "step_ms": t} for m, t in (("splitmask", 2.0), ("dino", 3.0))]
    )
    assert rows[1]["time_vs_splitmask"] == 1.5 and rows[1]["time_vs_beit"] is None


def test_table1_recipes_keep_the_number_of_updates() -> None:
    import runpy  # noqa: PLC0415

    configs = {
        p.stem: runpy.run_path(str(p))["config"]
        for p in sorted((REPO / "pretrain_configs").glob("dino_*.py"))
    }
    images = {"imagenet_full": 1_281_167, "imagenet_10pct": 128_116, "imagenet_1pct": 12_811, "coco": 118_287}
    updates = {}
    for name, cfg in configs.items():
        assert cfg.model.method == "dino" and cfg.dino.out_dim == 65536 and cfg.optim.weight_decay == 0.04
        key = name.removeprefix("dino_vits_")
        updates[key] = cfg.schedule.epochs * images[key]
        # The prototypes stay frozen for about one full-ImageNet epoch of updates.
        assert cfg.dino.freeze_last_layer_epochs * images[key] == pytest.approx(
            images["imagenet_full"], rel=0.1
        )
    assert set(updates) == set(images)
    assert all(u == pytest.approx(300 * 1_281_167, rel=0.1) for u in updates.values()), updates
