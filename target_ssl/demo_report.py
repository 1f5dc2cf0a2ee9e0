"""The demo's results: per-seed rows, their mean +- std over seeds, and whether a gain beats seed noise.

A row is one initialisation (a pretraining method, or random init); its columns are the tracks'
metrics. The verdict compares each pretrained row with random init column by column: the gain is
the difference of the means, and it "exceeds seed noise" when it is larger than twice its standard
error, sqrt(s_a^2 / n + s_b^2 / n) with the sample standard deviations over the n seeds (about a
95% two-sided test for normal noise; with 3 seeds a rough one, which the table says).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = ["COLUMNS", "aggregate", "verdict", "markdown_table", "fmt"]

RANDOM = "random_init"
# Column -> (track, key in that track's result); the order of the table.
COLUMNS: dict[str, tuple[str, str]] = {
    "box AP": ("det", "bbox_AP"),
    "box AP50": ("det", "bbox_AP50"),
    "mask AP": ("det", "segm_AP"),
    "mIoU": ("seg", "mIoU"),
    "top-1 fine-tuned": ("cls", "top1"),
    "top-1 linear": ("cls", "linear_top1"),
}


def fmt(value: float | None) -> str:
    """One decimal, two below 1 (small AP does not round to 0.0); '-' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.2f}" if abs(value) < 1 else f"{value:.1f}"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def aggregate(per_seed: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """[{row: {column: value}} per seed] -> {row: {column: {"mean", "std", "n", "values"}}}."""
    out: dict[str, dict[str, dict]] = {}
    for rows in per_seed:
        for row, cols in rows.items():
            for col, value in cols.items():
                out.setdefault(row, {}).setdefault(col, {"values": []})["values"].append(float(value))
    for cols in out.values():
        for stats in cols.values():
            stats["mean"], stats["std"] = _mean_std(stats["values"])
            stats["n"] = len(stats["values"])
    return out


def verdict(row: Mapping[str, float | list], baseline: Mapping[str, float | list]) -> dict[str, float | str]:
    """Gain of `row` over `baseline` (aggregate entries of one column) and whether it beats seed noise."""
    n = min(row["n"], baseline["n"])
    gain = row["mean"] - baseline["mean"]
    if n < 2:
        return {"gain": gain, "se": float("nan"), "verdict": "one seed: no verdict"}
    se = math.sqrt(row["std"] ** 2 / n + baseline["std"] ** 2 / n)
    beats = abs(gain) > 2 * se
    word = ("above" if gain > 0 else "below") if beats else "within seed noise"
    return {"gain": gain, "se": se, "verdict": f"{word} (gain {gain:+.2f}, 2 x s.e. {2 * se:.2f})"}


def markdown_table(stats: Mapping[str, Mapping[str, Mapping]], first: str = "initialisation") -> str:
    """Rows x columns of mean +- std (just the value for one seed), then one verdict line per
    pretrained row and column against random init."""
    columns = [c for c in COLUMNS if any(c in cols for cols in stats.values())]
    columns += sorted({c for cols in stats.values() for c in cols} - set(columns))
    lines = ["| " + " | ".join([first, *columns]) + " |", "|" + "---|" * (len(columns) + 1)]
    for row, cols in stats.items():
        cells = []
        for c in columns:
            s = cols.get(c)
            cells.append("-" if s is None else fmt(s["mean"]) + (f" ± {fmt(s['std'])}" if s["n"] > 1 else ""))
        lines.append("| " + " | ".join([row, *cells]) + " |")
    text = "\n".join(lines) + "\n"
    if RANDOM in stats and all(s["n"] < 2 for cols in stats.values() for s in cols.values()):
        text += "\none seed: no verdict (`--seeds 0 1 2` gives mean ± std and whether each gain beats seed noise)\n"
    elif RANDOM in stats:
        verdicts = []
        for row, cols in stats.items():
            if row == RANDOM:
                continue
            for c in columns:
                if c in cols and c in stats[RANDOM]:
                    verdicts.append(f"- {row} vs random init, {c}: {verdict(cols[c], stats[RANDOM][c])['verdict']}")
        if verdicts:
            text += "\n" + "\n".join(verdicts) + "\n"
    return text
