"""A probe of pretraining health: what frozen encoder features know, beside a random-init encoder.

At each tapped block (raw block outputs, as the dense adapters read them through
`forward_intermediates`):

- a linear probe on the frozen features: per patch for dense labels (scored as mIoU and patch
  accuracy on the held-out images), on the mean-pooled patch features for class labels (top-1
  accuracy), plus a weighted k-NN for class labels (k = 20, cosine similarity, votes
  exp(sim / 0.07), as DINO's evaluation);
- the effective rank of the patch features (Roy & Vetterli; RankMe): exp of the entropy of the
  singular values normalised to sum 1, of the raw features and of the standardised ones (each
  dimension centred and scaled to unit variance, which removes the few large directions that
  dominate the raw spectrum).

The linear probe is closed-form ridge regression on one-hot targets (standardised features,
lambda = `ridge` * n_train, float64 on the CPU): deterministic, one solve, no learning rate.
Every number is computed for the encoder under test and for a random-init encoder of the same
shape (fixed seed, built and scored once per `ProbeSet`), so the gap is what pretraining added.

Periodic use during pretraining (pretrain must not import transfer, so tools/pretrain.py attaches
it): build the set once, `probe_set = build_probe_set("ade20k", root, img_size, 64, 32)`, then every
N epochs `metrics = run_probe(unwrap_model(model).encoder, probe_set, taps, device, seed)` and log
`metrics`; the first call also scores the random twin (about twice the time), later calls reuse it.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_backbones.vit import VisionTransformer, default_out_indices

from .probe_data import IGNORE, ProbeSet

MAX_RANK_ROWS = 8192  # effective rank from at most this many patch rows (an even subsample)
BLOCK_LAYER_SCALE = 0.1  # BEiT's layer-scale init, for a random twin of a layer-scale encoder


def patch_labels(pixel_labels: torch.Tensor, patch: int, num_classes: int, min_purity: float = 0.5) -> torch.Tensor:
    """Per-pixel labels -> one label per patch: the patch's majority class, if it covers at least
    `min_purity` of the patch's pixels (ignored pixels count against it); otherwise IGNORE.

    Args:
        pixel_labels: (N, H, W) long in [0, K) or IGNORE; H, W multiples of `patch`.
    Returns:
        (N, H / patch, W / patch) long.
    """
    n, H, W = pixel_labels.shape
    h, w = H // patch, W // patch
    cells = pixel_labels.reshape(n, h, patch, w, patch).permute(0, 1, 3, 2, 4).reshape(n * h * w, patch * patch)
    counts = torch.zeros(n * h * w, num_classes + 1).scatter_add_(1, cells + 1, torch.ones(cells.shape))
    top, cls = counts[:, 1:].max(dim=1)  # majority among the real classes (slot 0 = ignored pixels)
    keep = top >= min_purity * patch * patch
    return torch.where(keep, cls, torch.full_like(cls, IGNORE)).reshape(n, h, w)


def effective_rank(features: torch.Tensor, standardise: bool = False) -> float:
    """exp(entropy of the normalised singular values) of (M, D) features: 1 .. min(M, D)."""
    x = features.double()
    if standardise:
        x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
    s = torch.linalg.svdvals(x)
    p = s / s.sum()
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))


@dataclass(frozen=True)
class LinearProbe:
    """A fitted ridge classifier: logits = ((x - mean) / std) @ weight + bias."""

    mean: torch.Tensor  # (D,)
    std: torch.Tensor  # (D,)
    weight: torch.Tensor  # (D, K)
    bias: torch.Tensor  # (K,)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(M, D) -> (M,) class ids."""
        return (((x.double() - self.mean) / self.std) @ self.weight + self.bias).argmax(1)


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, ridge: float = 1e-2) -> LinearProbe:
    """Closed-form ridge regression of one-hot targets on standardised features.

    Args:
        x: (n, D) features; y: (n,) long in [0, K).
        ridge: lambda / n; the bias is not penalised (targets and features are centred).
    """
    x = x.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    onehot = F.one_hot(y, num_classes).double()
    bias = onehot.mean(0)
    gram = xs.T @ xs + ridge * x.shape[0] * torch.eye(x.shape[1], dtype=torch.float64)
    weight = torch.linalg.solve(gram, xs.T @ (onehot - bias))
    return LinearProbe(mean, std, weight, bias)


def knn_predict(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, num_classes: int,
    k: int = 20, temperature: float = 0.07,
) -> torch.Tensor:
    """DINO's weighted k-NN: cosine similarity, the k nearest training rows vote exp(sim / T).

    Args:
        train_x: (n, D); train_y: (n,) long; test_x: (m, D).
    Returns:
        (m,) predicted class ids.
    """
    a, b = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    sim, idx = (b @ a.T).topk(min(k, a.shape[0]), dim=1)
    votes = torch.zeros(b.shape[0], num_classes).scatter_add_(1, train_y[idx], (sim / temperature).exp())
    return votes.argmax(1)


def mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """mIoU in percent over the classes present in `target` or `pred` (mmseg's nan-mean)."""
    conf = torch.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)
    inter, union = conf.diag().double(), (conf.sum(0) + conf.sum(1) - conf.diag()).double()
    return float((inter[union > 0] / union[union > 0]).mean() * 100)


@torch.no_grad()
def tap_features(
    encoder: VisionTransformer, images: torch.Tensor, taps: Sequence[int], device: torch.device | str,
    batch_size: int = 32,
) -> dict[int, torch.Tensor]:
    """Frozen raw block outputs: {tap: (N, h*w, D) float32 on the CPU} for images (N, 3, S, S)."""
    was_training = encoder.training
    encoder.eval()
    out: dict[int, list[torch.Tensor]] = {t: [] for t in taps}
    try:
        for chunk in images.split(batch_size):
            maps = encoder.forward_intermediates(chunk.to(device), list(taps))
            for t, m in zip(taps, maps):
                out[t].append(m.flatten(2).transpose(1, 2).float().cpu())
    finally:
        encoder.train(was_training)
    return {t: torch.cat(v) for t, v in out.items()}


@dataclass
class TapResult:
    """One encoder at one tap: its scores and the singular values of its raw patch features."""

    metrics: dict[str, float]
    singular_values: torch.Tensor  # (min(M, D),) raw features, descending


def _rank_rows(patches: torch.Tensor) -> torch.Tensor:
    rows = patches.reshape(-1, patches.shape[-1])
    step = max(1, rows.shape[0] // MAX_RANK_ROWS)
    return rows[::step][:MAX_RANK_ROWS]


def score_tap(feats: torch.Tensor, probe_set: ProbeSet, patch: int, ridge: float = 1e-2) -> TapResult:
    """Probe scores of one tap's features (N, L, D) on `probe_set`."""
    fit, held = probe_set.is_train, ~probe_set.is_train
    K = probe_set.num_classes
    if probe_set.kind == "dense":
        labels = patch_labels(probe_set.labels, patch, K).flatten(1)  # (N, L)
        x_fit, y_fit = feats[fit].flatten(0, 1), labels[fit].flatten()
        x_held, y_held = feats[held].flatten(0, 1), labels[held].flatten()
        ok_fit, ok_held = y_fit != IGNORE, y_held != IGNORE
        pred = fit_linear_probe(x_fit[ok_fit], y_fit[ok_fit], K, ridge).predict(x_held[ok_held])
        metrics = {"miou": mean_iou(pred, y_held[ok_held], K),
                   "patch_acc": float((pred == y_held[ok_held]).double().mean() * 100)}
    else:
        pooled, y = feats.mean(1), probe_set.labels
        pred = fit_linear_probe(pooled[fit], y[fit], K, ridge).predict(pooled[held])
        knn = knn_predict(pooled[fit], y[fit], pooled[held], K)
        metrics = {"linear_acc": float((pred == y[held]).double().mean() * 100),
                   "knn_acc": float((knn == y[held]).double().mean() * 100)}
    rows = _rank_rows(feats)
    metrics["erank_raw"] = effective_rank(rows)
    metrics["erank_std"] = effective_rank(rows, standardise=True)
    metrics["feature_norm"] = float(rows.norm(dim=1).mean())
    return TapResult(metrics, torch.linalg.svdvals(rows.double()))


def random_init_like(encoder: VisionTransformer, seed: int = 0) -> VisionTransformer:
    """A freshly initialised encoder of the same shape (the fine-tuning random-init baseline).

    A copy re-initialised under a fixed seed: `init_weights` for the linears, patch projection and
    tokens, LayerNorms to (1, 0), and layer-scale gammas (if any) to BEiT's 0.1.
    """
    twin = copy.deepcopy(encoder).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        twin.init_weights()
        for name, m in twin.named_modules():
            if isinstance(m, torch.nn.LayerNorm):
                torch.nn.init.ones_(m.weight)
                torch.nn.init.zeros_(m.bias)
            elif hasattr(m, "gamma") and name.endswith(("ls1", "ls2")):
                torch.nn.init.constant_(m.gamma, BLOCK_LAYER_SCALE)
    return twin


def probe_encoder(
    encoder: VisionTransformer, probe_set: ProbeSet, taps: Sequence[int], device: torch.device | str = "cpu",
    ridge: float = 1e-2,
) -> dict[int, TapResult]:
    """Score `encoder` at each tap (block indices, 0-based) on `probe_set`."""
    feats = tap_features(encoder, probe_set.images, taps, device)
    return {t: score_tap(f, probe_set, encoder.patch_size, ridge) for t, f in feats.items()}


def probe_with_baseline(
    encoder: VisionTransformer, probe_set: ProbeSet, taps: Sequence[int] | None = None,
    device: torch.device | str = "cpu", seed: int = 0,
) -> tuple[dict[int, TapResult], dict[int, TapResult]]:
    """(encoder's results, random-init twin's results) per tap; the twin's are computed once per
    probe set, shape, taps and seed and cached in `probe_set.baselines`."""
    # Unique blocks: shallow encoders repeat taps (2 blocks: the adapter reads 0, 0, 0, 1).
    taps = list(dict.fromkeys(t % encoder.depth for t in (taps if taps is not None else default_out_indices(encoder.depth))))
    shape = tuple((k, tuple(v.shape)) for k, v in encoder.state_dict().items())
    key = (shape, tuple(taps), seed)
    if key not in probe_set.baselines:
        twin = random_init_like(encoder, seed).to(device)
        probe_set.baselines[key] = probe_encoder(twin, probe_set, taps, device)
    return probe_encoder(encoder, probe_set, taps, device), probe_set.baselines[key]


def run_probe(
    encoder: VisionTransformer, probe_set: ProbeSet, taps: Sequence[int] | None = None,
    device: torch.device | str = "cpu", seed: int = 0,
) -> dict[str, float]:
    """Flat metrics for a log line: `probe/<metric>/block<t>` (encoder) and
    `probe_random/<metric>/block<t>` (random-init twin), for each tap t (default: the adapter's)."""
    ours, random = probe_with_baseline(encoder, probe_set, taps, device, seed)
    flat = {}
    for prefix, results in (("probe", ours), ("probe_random", random)):
        for t, r in results.items():
            flat.update({f"{prefix}/{k}/block{t}": v for k, v in r.metrics.items()})
    return flat
