"""Frozen-encoder evaluation (`--mode linear` / `--mode knn`): cache features, probe, report by block.

Features are computed once per image with the test transform (resize, centre crop; no
augmentation: cached features make the probe cheap and per-block probing possible in one run;
MAE's probe instead re-augments every epoch) from the blocks asked for, then
`probes.train_linear_probes` or `probes.knn_scores` score every block. With more than one block
the run draws accuracy by block (`probe_by_block.png`, Figure 5 of the paper).

Probes run in one process (under torchrun every rank would repeat the same work: run them with
plain `python`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from engine.trainer import RESULT_FILE, open_run
from ssl_backbones import load_encoder_weights
from ssl_backbones.vit import VisionTransformer, create_vit

from .augment import eval_transform
from .config import ClsConfig
from .data import ClsDataset, collate
from .loop import read_splits
from .model import block_features
from .probes import accuracy_metrics, knn_scores, train_linear_probes

_log = logging.getLogger("target_ssl")

__all__ = ["run_probe", "extract_features", "probed_blocks", "plot_by_block"]


def probed_blocks(cfg: ClsConfig, depth: int) -> list[int]:
    """0-based block indices: every block, the configured ones, or the last."""
    if cfg.probe.all_blocks:
        return list(range(depth))
    return sorted({b % depth for b in cfg.probe.blocks}) if cfg.probe.blocks else [depth - 1]


def build_frozen_encoder(cfg: ClsConfig) -> VisionTransformer:
    m = cfg.model
    overrides = {k: v for k, v in (("embed_dim", m.embed_dim), ("depth", m.depth), ("num_heads", m.num_heads)) if v is not None}
    encoder = create_vit(m.arch, pos_embed="sincos", img_size=cfg.data.img_size, init_values=m.layer_scale, **overrides)
    if m.weights:
        load_encoder_weights(encoder, m.weights, allow_pickle=cfg.run.allow_pickle)
    else:
        _log.info("probing a randomly initialised %s (model.weights is None)", m.arch)
    return encoder.eval()


@torch.no_grad()
def extract_features(encoder: VisionTransformer, dataset: ClsDataset, blocks: list[int], feature: str,
                     batch_size: int, num_workers: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(N', L, D) float32 features and (N',) labels of the readable images of `dataset`."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    feats, labels = [], []
    for batch in loader:
        keep = batch["label"] >= 0
        feats.append(block_features(encoder, batch["image"][keep].to(device), blocks, feature).float())
        labels.append(batch["label"][keep].to(device))
    return torch.cat(feats), torch.cat(labels)


def plot_by_block(blocks: list[int], top1: list[float], path: Path, title: str) -> Path:
    """Top-1 by block (1-based on the axis, as Figure 5)."""
    import matplotlib  # noqa: PLC0415 (only the picture needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([b + 1 for b in blocks], top1, marker="o")
    ax.set_xlabel("block")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _score_blocks(cfg: ClsConfig, train: tuple, val: tuple, k: int) -> list[dict]:
    (xt, yt), (xv, yv) = train, val
    p = cfg.probe
    if cfg.mode == "knn":
        return [accuracy_metrics(knn_scores(xt[:, i], yt, xv[:, i], k, p.k, p.temperature), yv, k)
                for i in range(xt.shape[1])]
    metrics, _ = train_linear_probes(
        xt, yt, xv, yv, k, epochs=p.epochs, batch_size=p.batch_size, base_lr=p.base_lr, weight_decay=p.weight_decay,
        warmup_epochs=p.warmup_epochs, optimizer=p.optimizer, momentum=p.momentum, seed=cfg.run.seed,
    )  # fmt: skip
    return metrics


def run_probe(cfg: ClsConfig) -> dict:
    """Linear probe or k-NN (`cfg.mode`) of the frozen encoder `cfg.model.weights` on each probed block.

    Writes `probe_results.json` (per block: top-1, top-5, mean class accuracy, per-class accuracy),
    `final_metrics.json` (the last probed block's metrics + top-1 by block) and, for more than one
    block, `probe_by_block.png`. Returns the final metrics.
    """
    if cfg.mode not in ("linear", "knn"):
        raise ValueError(f"run_probe needs mode 'linear' or 'knn', got {cfg.mode!r}")
    start = time.perf_counter()
    ctx = open_run(cfg.run)
    torch.manual_seed(cfg.run.seed)
    train_samples, val_samples, names = read_splits(cfg)
    if cfg.probe.max_train_images:
        train_samples = train_samples[: cfg.probe.max_train_images]
    transform = eval_transform(cfg.aug, cfg.data.img_size)
    encoder = build_frozen_encoder(cfg).to(ctx.device)
    blocks = probed_blocks(cfg, encoder.depth)
    args = (blocks, cfg.probe.feature, cfg.probe.batch_features, cfg.data.num_workers, ctx.device)
    train = extract_features(encoder, ClsDataset(train_samples, transform, train=False), *args)
    val = extract_features(encoder, ClsDataset(val_samples, transform, train=False), *args)
    per_block = _score_blocks(cfg, train, val, len(names))
    result = {
        **per_block[-1],
        "mode": cfg.mode, "feature": cfg.probe.feature, "block": blocks[-1],
        "top1_by_block": {str(b): m["top1"] for b, m in zip(blocks, per_block)},
        "num_train": int(train[1].numel()), "run_dir": str(ctx.run_dir),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    if ctx.info.is_main:
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        rows = [{"block": b, **m} for b, m in zip(blocks, per_block)]
        (ctx.run_dir / "probe_results.json").write_text(json.dumps({"class_names": names, "blocks": rows}, indent=2))
        if len(blocks) > 1:
            title = f"{'linear probe' if cfg.mode == 'linear' else 'k-NN'} ({cfg.probe.feature})"
            result["picture"] = str(plot_by_block(blocks, [m["top1"] for m in per_block],
                                                  ctx.run_dir / "probe_by_block.png", title))
        (ctx.run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    _log.info("%s on block %d: top-1 %.2f  top-5 %.2f", cfg.mode, blocks[-1], result["top1"], result["top5"])
    return result
