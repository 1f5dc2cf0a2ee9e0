"""Loss curves from the `metrics.jsonl` files that every training loop writes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a JSON-lines metrics file (a missing file reads as no records)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def series(records: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` over the records that have it."""
    pairs = [(r["step"], float(r[key])) for r in records if key in r and "step" in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_loss_curves(
    runs: Mapping[str, str | Path], out_png: str | Path, key: str = "loss", title: str = ""
) -> Path:
    """One line per run (label -> metrics.jsonl) of `key` against the step: the logged values, and
    over them a centred moving average (about 1/15 of the points wide) once a run has enough points."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for label, path in runs.items():
        steps, values = series(read_metrics(path), key)
        window = len(values) // 15
        if window >= 2:
            ax.plot(steps, values, alpha=0.3, linewidth=0.8)
            ax.plot(steps, smooth(values, window), label=label, color=ax.lines[-1].get_color(), linewidth=1.6)
        elif steps:
            ax.plot(steps, values, label=label, linewidth=1.6)
    return _finish(fig, ax, out_png, title or key, key)


def plot_metric_curves(
    metrics_path: str | Path, curves: Mapping[str, str], out_png: str | Path, title: str = "", ylabel: str = ""
) -> Path:
    """One line per curve (label -> key of one metrics.jsonl) against the step, points marked: for
    sparse records such as evaluations. Labels sharing their first word share a colour; the ones
    mentioning "random" are dashed."""
    records = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    colours: dict[str, str] = {}
    for label, key in curves.items():
        steps, values = series(records, key)
        if not steps:
            continue
        group = label.split()[0]
        style = "--" if "random" in label else "-"
        line = ax.plot(steps, values, style, marker="o", markersize=3, label=label, color=colours.get(group))[0]
        colours.setdefault(group, line.get_color())
    return _finish(fig, ax, out_png, title, ylabel, fontsize=7)


def _finish(fig, ax, out_png: str | Path, title: str, ylabel: str, fontsize: int | None = None) -> Path:
    """Labels, grid and legend, then save and close: the common end of every curve plot."""
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=fontsize)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=fontsize)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Centred moving average of `window` points; near the ends, the mean of the points in reach.
    Centred, so the curve does not lag behind the data as an exponential average does."""
    v = np.asarray(values, dtype=float)
    kernel = np.ones(window)
    return np.convolve(v, kernel, mode="same") / np.convolve(np.ones_like(v), kernel, mode="same")
