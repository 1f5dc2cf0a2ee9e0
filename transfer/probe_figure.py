"""The probe's picture for one tap: scores and feature spectra, target-pretrained beside random init."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from .probing import TapResult  # noqa: E402

SCORE_KEYS = ("miou", "patch_acc", "linear_acc", "knn_acc")
LABELS = {"pretrained": "encoder under test", "random_init": "random init (same shape)"}


def save_tap_figure(tap: int, results: dict[str, TapResult], out_png: str | Path, title: str = "") -> Path:
    """Left: the tap's probe scores (percent) per encoder; right: the normalised singular values of
    the raw patch features (a collapsed encoder's spectrum falls off fast), with each effective rank.

    Args:
        results: {"pretrained": TapResult, "random_init": TapResult}.
    """
    fig, (ax_s, ax_r) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    keys = [k for k in SCORE_KEYS if k in results["pretrained"].metrics]
    width = 0.8 / len(results)
    for i, (name, r) in enumerate(results.items()):
        xs = [j + i * width for j in range(len(keys))]
        bars = ax_s.bar(xs, [r.metrics[k] for k in keys], width, label=LABELS.get(name, name))
        ax_s.bar_label(bars, fmt="%.1f", fontsize=8)
        s = r.singular_values
        ax_r.semilogy(range(1, len(s) + 1), (s / s.sum()).numpy(),
                      label=f"{LABELS.get(name, name)}: erank {r.metrics['erank_raw']:.1f} raw, "
                            f"{r.metrics['erank_std']:.1f} standardised")
    ax_s.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))], keys)
    ax_s.set_ylabel("held-out score (%)")
    ax_s.set_title(f"linear / k-NN probe at block {tap}")
    ax_s.legend(fontsize=8)
    ax_r.set_xlabel("component")
    ax_r.set_ylabel("singular value / sum")
    ax_r.set_title("spectrum of the raw patch features")
    ax_r.legend(fontsize=7)
    ax_r.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
