"""Loss curves from the `metrics.jsonl` files that every training loop writes."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

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
    """One line per run (label -> metrics.jsonl) of `key` against the step, smoothed lightly."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for label, path in runs.items():
        steps, values = series(read_metrics(path), key)
        if steps:
            ax.plot(steps, values, alpha=0.3, linewidth=0.8)
            ax.plot(steps, _ema(values), label=label, color=ax.lines[-1].get_color(), linewidth=1.6)
    ax.set_xlabel("iteration")
    ax.set_ylabel(key)
    ax.set_title(title or key)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def _ema(values: Sequence[float], beta: float = 0.9) -> list[float]:
    out, avg = [], None
    for v in values:
        avg = v if avg is None else beta * avg + (1 - beta) * v
        out.append(avg)
    return out
