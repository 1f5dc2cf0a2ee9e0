"""Frozen-feature evaluations: DINO's weighted k-NN and MAE's linear probe, on tensors only.

Nothing here knows about images, encoders or files: the functions take cached features (N, D) or
(N, L, D) for L blocks and labels (N,), so any caller (the classification tool, a pretraining
health check) can use them.

- `knn_scores`: cosine similarity to every training feature, the k most similar vote with weight
  exp(sim / T) for their class (DINO: k = 20, T = 0.07); vectorised over test chunks.
- `train_linear_probes`: one BatchNorm-without-affine + Linear head per block (MAE's probe), all
  trained together on the cached features with LARS (MAE) or SGD + momentum, lr = base_lr * batch
  / 256, linear warmup then cosine; returns each head's validation accuracy.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["knn_scores", "hit_counts", "metrics_from_counts", "accuracy_metrics", "LARS", "LinearProbes", "train_linear_probes"]


@torch.no_grad()
def knn_scores(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk: int = 1024,
) -> torch.Tensor:
    """Weighted k-NN class scores (DINO's evaluation).

    Args:
        train_feats: (N, D); train_labels: (N,) long in [0, K).
        test_feats: (M, D).
        k: neighbours (clipped to N); temperature: of the vote weights exp(cos / T).
    Returns:
        (M, K) scores: sum over the k nearest training features (cosine) of exp(cos / T) per class.
    """
    train = F.normalize(train_feats.float(), dim=1)
    k = min(k, train.shape[0])
    out = []
    for start in range(0, test_feats.shape[0], chunk):
        test = F.normalize(test_feats[start : start + chunk].float(), dim=1)
        sim, idx = (test @ train.T).topk(k, dim=1)  # (m, k)
        votes = torch.zeros(test.shape[0], num_classes, device=test.device)
        out.append(votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp()))
    return torch.cat(out)


def hit_counts(top: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts that sum over shards (all-reduce them under DDP): (2K + 2,) float64 =
    [correct top-1 per class (K), samples per class (K), top-5 hits, samples].

    Args:
        top: (M, k) predicted classes, best first (k = min(5, K)); labels: (M,) long.
    """
    labels = labels.to(top.device)
    hit1 = top[:, 0] == labels
    hit5 = (top == labels[:, None]).any(dim=1)
    return torch.cat([
        torch.bincount(labels[hit1], minlength=num_classes).double(),
        torch.bincount(labels, minlength=num_classes).double(),
        torch.tensor([hit5.sum().item(), labels.numel()], dtype=torch.float64, device=top.device),
    ])


def metrics_from_counts(counts: torch.Tensor, num_classes: int) -> dict:
    """top-1 / top-5 (in %) and per-class accuracy (%; None for classes without samples) with
    their mean, from `hit_counts`."""
    c = counts.tolist()
    correct, total, hit5, n = c[:num_classes], c[num_classes : 2 * num_classes], c[-2], c[-1]
    per_class = [100.0 * a / t if t else None for a, t in zip(correct, total)]
    present = [p for p in per_class if p is not None]
    return {
        "top1": 100.0 * sum(correct) / max(n, 1),
        "top5": 100.0 * hit5 / max(n, 1),
        "mean_class_acc": sum(present) / max(len(present), 1),
        "per_class_acc": per_class,
        "num_images": int(n),
    }


def accuracy_metrics(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """`metrics_from_counts` of scores (M, K) against labels (M,)."""
    top = scores.topk(min(5, num_classes), dim=1).indices
    return metrics_from_counts(hit_counts(top, labels, num_classes), num_classes)


class LARS(torch.optim.Optimizer):
    """SGD + momentum with layer-wise trust ratios (You et al. 2017) as in MAE's linear probe.

    For parameters with more than one dimension the update g + wd * p is scaled by
    `trust_coefficient * ||p|| / ||g + wd * p||` (1 when either norm is 0); biases and other 1-D
    parameters get plain momentum SGD without weight decay.
    """

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = 0.9,
                 trust_coefficient: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum,
                                      trust_coefficient=trust_coefficient))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 (torch's signature)
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    d = d.add(p, alpha=g["weight_decay"])
                    p_norm, d_norm = torch.norm(p), torch.norm(d)
                    ratio = torch.where((p_norm > 0) & (d_norm > 0), g["trust_coefficient"] * p_norm / d_norm, 1.0)
                    d = d.mul(ratio)
                buf = self.state[p].setdefault("mu", torch.zeros_like(p))
                buf.mul_(g["momentum"]).add_(d)
                p.add_(buf, alpha=-g["lr"])


class LinearProbes(nn.Module):
    """L independent heads BatchNorm1d(D, affine=False) -> Linear(D, K), one per block.

    (N, L, D) -> logits (N, L, K). The heads share no parameter, so training their summed loss
    trains each one as if alone (LARS's trust ratio is per parameter tensor, i.e. per head).
    """

    def __init__(self, num_layers: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(nn.BatchNorm1d(dim, affine=False, eps=1e-6) for _ in range(num_layers))
        self.heads = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(num_layers))
        for h in self.heads:
            nn.init.trunc_normal_(h.weight, std=0.01)  # MAE's probe init
            nn.init.zeros_(h.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(n(feats[:, i])) for i, (n, h) in enumerate(zip(self.norms, self.heads))], dim=1)


def _lr_at(step: int, total: int, warmup: int, lr: float) -> float:
    if step < warmup:
        return lr * step / warmup
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def train_linear_probes(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 90,
    batch_size: int = 16384,
    base_lr: float = 0.1,
    weight_decay: float = 0.0,
    warmup_epochs: int = 10,
    optimizer: str = "lars",
    momentum: float = 0.9,
    seed: int = 0,
) -> tuple[list[dict], LinearProbes]:
    """Train one linear probe per block on cached features and score each on the validation set.

    Args:
        train_feats: (N, L, D); val_feats: (M, L, D); labels (N,), (M,) long in [0, K).
        batch_size: clipped to N; the lr is `base_lr * batch / 256` (MAE).
        optimizer: "lars" or "sgd" (momentum SGD, same lr).
        seed: the order of the batches comes from a generator seeded with it.
    Returns:
        one `accuracy_metrics` dict per block (in the order of the L axis), and the trained probes.
    """
    n, num_layers, dim = train_feats.shape
    device = train_feats.device
    batch = min(batch_size, n)
    lr = base_lr * batch / 256
    probes = LinearProbes(num_layers, dim, num_classes).to(device)
    params = [{"params": [p for p in probes.parameters()], "weight_decay": weight_decay}]
    opt = LARS(params, lr=lr, weight_decay=weight_decay, momentum=momentum) if optimizer == "lars" else \
        torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps_per_epoch = max(n // batch, 1)
    total, warmup = epochs * steps_per_epoch, warmup_epochs * steps_per_epoch
    g = torch.Generator().manual_seed(seed)
    probes.train()
    for step in range(total):
        if step % steps_per_epoch == 0:
            order = torch.randperm(n, generator=g).to(device)
        idx = order[(step % steps_per_epoch) * batch : (step % steps_per_epoch + 1) * batch]
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, total, warmup, lr)
        logits = probes(train_feats[idx].float())  # (b, L, K)
        target = train_labels[idx].repeat_interleave(num_layers)
        loss = F.cross_entropy(logits.flatten(0, 1), target, reduction="sum") / idx.numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    probes.eval()
    with torch.no_grad():
        val_logits = probes(val_feats.float())
    return [accuracy_metrics(val_logits[:, i], val_labels, num_classes) for i in range(num_layers)], probes
