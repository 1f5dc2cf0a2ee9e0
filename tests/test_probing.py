"""The pretraining-health probe: linear probe, k-NN, effective rank, per-patch labels, end to end."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from demo_data import DEMO_COCO_CATEGORIES
from ssl_backbones import create_vit
from transfer.probe_data import IGNORE, ProbeSet, build_probe_set, folder_probe_set
from transfer.probing import (
    effective_rank,
    fit_linear_probe,
    knn_predict,
    mean_iou,
    patch_labels,
    random_init_like,
    run_probe,
)


def _clusters(n: int, k: int, d: int, gen: torch.Generator, sep: float) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, k, (n,), generator=gen)
    centres = torch.eye(k, d) * sep
    return centres[y] + torch.randn(n, d, generator=gen), y


def test_linear_probe_separates_separable_features_and_not_shuffled_labels() -> None:
    gen = torch.Generator().manual_seed(0)
    k = 4
    x, y = _clusters(1200, k, 16, gen, sep=8.0)
    probe = fit_linear_probe(x[:600], y[:600], k)
    assert (probe.predict(x[600:]) == y[600:]).double().mean() > 0.99
    shuffled = y[:600][torch.randperm(600, generator=gen)]
    acc = (fit_linear_probe(x[:600], shuffled, k).predict(x[600:]) == y[600:]).double().mean().item()
    assert abs(acc - 1 / k) < 0.08  # chance


def test_knn_equals_brute_force() -> None:
    gen = torch.Generator().manual_seed(1)
    train_x, train_y, test_x = torch.randn(30, 5, generator=gen), torch.randint(0, 3, (30,), generator=gen), torch.randn(7, 5, generator=gen)
    k, T = 6, 0.07
    pred = knn_predict(train_x, train_y, test_x, 3, k=k, temperature=T)

    def cos(u: torch.Tensor, v: torch.Tensor) -> float:
        return float(u @ v) / (math.sqrt(float(u @ u)) * math.sqrt(float(v @ v)))

    for i in range(7):
        sims = sorted(((cos(test_x[i], train_x[j]), j) for j in range(30)), reverse=True)[:k]
        votes = [0.0, 0.0, 0.0]
        for s, j in sims:
            votes[int(train_y[j])] += math.exp(s / T)
        assert int(pred[i]) == max(range(3), key=lambda c: votes[c])


def test_effective_rank_hand_values() -> None:
    ident = torch.zeros(10, 6)
    ident[:4, :4] = torch.eye(4) * 3.0  # four equal singular values
    assert effective_rank(ident) == pytest.approx(4.0)
    diag = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # p = (3/4, 1/4)
    assert effective_rank(diag) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    # singular values sqrt(2), sqrt(8) raw; standardising equalises the two columns -> rank 2
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    p = torch.tensor([math.sqrt(2), math.sqrt(8)]) / (math.sqrt(2) + math.sqrt(8))
    assert effective_rank(x) == pytest.approx(math.exp(-float((p * p.log()).sum())))
    assert effective_rank(x, standardise=True) == pytest.approx(2.0)


def test_patch_labels_on_a_hand_made_map() -> None:
    I = IGNORE  # noqa: E741
    pixels = torch.tensor([[
        [1, 1, 2, 2, 0, 0],
        [1, 1, 2, I, 1, 2],
        [I, I, 0, 0, 3, 3],
        [I, 0, 0, 0, 3, I],
    ]])
    # patches: all 1 | 3 of 2 (0.75) | 0,0,1,2 (0.5) / 3 ignored | all 0 | 3 of 3
    assert patch_labels(pixels, 2, 4).tolist() == [[[1, 2, 0], [I, 0, 3]]]
    assert patch_labels(pixels, 2, 4, min_purity=0.6).tolist() == [[[1, 2, I], [I, 0, 3]]]


def test_mean_iou_hand_value() -> None:
    target, pred = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 0])
    # class 0: 1 / 3, class 1: 2 / 3, class 2: 0 / 1
    assert mean_iou(pred, target, 4) == pytest.approx(100 * (1 / 3 + 2 / 3 + 0) / 3)


def test_random_twin_ignores_the_weights_and_is_fixed_by_seed() -> None:
    enc = create_vit("vit_tiny", embed_dim=64, depth=2, num_heads=2, img_size=32, init_values=0.5)
    trained = create_vit("vit_tiny", embed_dim=64, depth=2, num_heads=2, img_size=32, init_values=0.5)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    a, b = random_init_like(enc, 3).state_dict(), random_init_like(trained, 3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(random_init_like(enc, 4).blocks[0].attn.qkv.weight, a["blocks.0.attn.qkv.weight"])
    assert torch.equal(a["blocks.1.ls2.gamma"], torch.full((64,), 0.1))


def _write_folder(root: Path, per_class: int) -> None:
    rng = np.random.default_rng(0)
    for c, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        (root / "train" / c).mkdir(parents=True)
        for i in range(per_class):
            img = np.clip(np.array(colour) + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / "train" / c / f"{i}.png")


def test_class_folder_probe_holds_out_every_fourth_image(tmp_path: Path) -> None:
    _write_folder(tmp_path, 8)
    ps = folder_probe_set(tmp_path, img_size=32)
    assert ps.kind == "class" and ps.class_names == ["blue", "red"]
    assert int((~ps.is_train).sum()) == 4 and int(ps.is_train.sum()) == 12  # 2 of 8 per class
    enc = create_vit("vit_tiny", embed_dim=64, depth=2, num_heads=2, img_size=32)
    out = run_probe(enc, ps, taps=[0, 1])
    # colour alone separates the classes: even random features get them
    assert out["probe/linear_acc/block1"] == 100.0 and out["probe_random/knn_acc/block1"] == 100.0


@pytest.mark.slow
def test_probe_on_demo_ade_scores_every_tap_for_both_encoders(demo_ade: Path) -> None:
    ps = build_probe_set("ade20k", demo_ade, img_size=64, max_train=32, max_val=16)
    assert ps.kind == "dense" and ps.images.shape == (48, 3, 64, 64) and int(ps.is_train.sum()) == 32
    assert set(ps.labels.unique().tolist()) <= {IGNORE, *range(ps.num_classes)}
    torch.manual_seed(0)
    enc = create_vit("vit_tiny", embed_dim=64, depth=2, num_heads=2, img_size=64)
    out = run_probe(enc, ps, taps=[0, 1])
    for who in ("probe", "probe_random"):
        for tap in (0, 1):
            assert 0 < out[f"{who}/miou/block{tap}"] <= 100
            assert 1 <= out[f"{who}/erank_raw/block{tap}"] <= 64
    assert len(ps.baselines) == 1 and run_probe(enc, ps, taps=[0, 1]) == out  # baseline cached, deterministic


@pytest.mark.slow
def test_coco_probe_labels_paint_instances_over_background(demo_coco: Path) -> None:
    ps = build_probe_set("coco", demo_coco, img_size=64, max_train=8, max_val=4)
    k = len(DEMO_COCO_CATEGORIES) + 1  # + background
    assert isinstance(ps, ProbeSet) and ps.class_names[0] == "background" and ps.num_classes == k
    values = set(ps.labels.unique().tolist())
    # image 5 of the demo holds a crowd region: ignored, not background
    assert 0 in values and IGNORE in values and values == {0, IGNORE, *range(1, k)}


@pytest.mark.slow
def test_probe_tool_writes_table_json_and_pictures(demo_ade: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json
    import subprocess
    import sys

    from ssl_backbones import export_encoder

    torch.manual_seed(0)
    enc = create_vit("vit_tiny", embed_dim=64, depth=2, num_heads=2, img_size=64)
    weights = export_encoder(enc, tmp_path / "encoder", {"method": "none"})
    repo = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(repo / "tools" / "probe.py"), "--weights", str(weights), "--data", "ade20k",
           "--data-root", str(demo_ade), "--img-size", "64", "--max-train", "16", "--max-val", "8",
           "--taps", "0", "1", "--output-dir", str(tmp_path / "out"), "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| block 0 |" in done.stdout and "| block 1 |" in done.stdout
    record = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert set(record["taps"]) == {"0", "1"} and set(record["taps"]["1"]) == {"pretrained", "random_init"}
    assert (tmp_path / "out" / "probe_block1.png").stat().st_size > 1000
    # bad input: a message naming the folder, not a traceback
    bad = subprocess.run(cmd[:5] + ["folder", "--data-root", str(tmp_path / "nowhere")], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "nowhere/train does not exist" in bad.stderr and "Traceback" not in bad.stderr
