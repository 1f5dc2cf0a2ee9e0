"""The demo's table: mean +- std over seeds, small values with two decimals, and the seed-noise verdict."""

from __future__ import annotations

import math
import statistics

from target_ssl.demo_report import aggregate, fmt, markdown_table, verdict


def test_aggregate_is_the_mean_and_sample_std_per_row_and_column() -> None:
    seeds = [{"a": {"x": 1.0}, "random_init": {"x": 0.5}}, {"a": {"x": 3.0}, "random_init": {"x": 0.7}},
             {"a": {"x": 5.0}, "random_init": {"x": 0.6}}]
    stats = aggregate(seeds)
    assert stats["a"]["x"]["mean"] == 3.0 and stats["a"]["x"]["n"] == 3
    assert math.isclose(stats["a"]["x"]["std"], statistics.stdev([1.0, 3.0, 5.0]))
    assert math.isclose(stats["random_init"]["x"]["std"], statistics.stdev([0.5, 0.7, 0.6]))


def test_verdict_is_two_standard_errors() -> None:
    # gain 3, s.e. sqrt(4/3 + 0.01/3) ~ 1.156: 3 > 2.31 -> above
    a, b = aggregate([{"r": {"x": v}} for v in (1.0, 3.0, 5.0)])["r"]["x"], aggregate(
        [{"r": {"x": v}} for v in (0.0, 0.1, -0.1)])["r"]["x"]
    v = verdict(a, b)
    assert math.isclose(v["se"], math.sqrt(4 / 3 + 0.01 / 3)) and v["verdict"].startswith("above")
    # the same gain with a noisier baseline is within seed noise
    noisy = aggregate([{"r": {"x": v}} for v in (-5.0, 0.0, 5.0)])["r"]["x"]
    assert verdict(a, noisy)["verdict"].startswith("within seed noise")
    assert verdict(noisy, a)["verdict"].startswith("within")
    low = aggregate([{"r": {"x": v}} for v in (-3.0, -3.1, -2.9)])["r"]["x"]
    assert verdict(low, b)["verdict"].startswith("below")


def test_small_values_keep_two_decimals_and_the_table_has_std() -> None:
    assert fmt(0.04) == "0.04" and fmt(12.345) == "12.3" and fmt(None) == "-"
    stats = aggregate([{"splitmask": {"box AP": 0.5}, "random_init": {"box AP": 0.25}},
                       {"splitmask": {"box AP": 0.7}, "random_init": {"box AP": 0.35}}])
    text = markdown_table(stats)
    assert "| splitmask | 0.60 ± 0.14 |" in text and "| random_init | 0.30 ± 0.07 |" in text
    assert "splitmask vs random init, box AP:" in text
    one = markdown_table(aggregate([{"splitmask": {"mIoU": 60.0}, "random_init": {"mIoU": 61.0}}]))
    assert "one seed: no verdict" in one and "| splitmask | 60.0 |" in one
