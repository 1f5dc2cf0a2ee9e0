"""engine.skips.SkipBudget: the fraction rule, examples in the message, totals across a resume."""

from __future__ import annotations

import pytest

from engine.config import ConfigError
from engine.skips import SkipBudget, TooManyBrokenFilesError


def test_budget_stops_only_past_fraction_after_min_seen():
    b = SkipBudget(max_fraction=0.1, min_seen=20)
    b.update(skipped=3, seen=10, files=["a.jpg (truncated)", "b.jpg (x)", "c.jpg (y)"])
    assert (b.seen, b.skipped) == (10, 3)
    b.check()  # 30% but only 10 seen: not yet
    b.update(skipped=0, seen=10, files=[])
    assert b.exceeded()  # 3 / 20 = 15% > 10% -> exceeded
    with pytest.raises(TooManyBrokenFilesError) as info:
        b.check()
    msg = str(info.value)
    assert "3 of 20" in msg and "a.jpg (truncated)" in msg and "data.max_skipped_fraction" in msg
    assert isinstance(info.value, ConfigError)  # the tools print it without a traceback


def test_budget_at_exact_fraction_passes():
    b = SkipBudget(max_fraction=0.1, min_seen=10)
    b.update(skipped=1, seen=10)
    b.check()  # 10% is allowed; more is not
    b.update(skipped=1, seen=1)
    with pytest.raises(TooManyBrokenFilesError):
        b.check()


def test_state_round_trip_keeps_totals_and_examples():
    b = SkipBudget(max_fraction=0.5, min_seen=1, keep_examples=2)
    b.update(2, 8, ["x.png (a)", "y.png (b)", "z.png (c)"])
    state = b.state_dict()
    assert state == {"seen": 8, "skipped": 2, "examples": ["x.png (a)", "y.png (b)"]}
    c = SkipBudget(max_fraction=0.5, min_seen=1, keep_examples=2)
    c.load_state_dict(state)
    c.update(1, 4, ["w.png"])
    assert (c.seen, c.skipped) == (12, 3) and c.examples == ["x.png (a)", "y.png (b)"]
    d = SkipBudget()
    d.load_state_dict({})  # a checkpoint from before the budget existed
    assert (d.seen, d.skipped) == (0, 0)


def test_update_rejects_inconsistent_counts():
    with pytest.raises(ValueError):
        SkipBudget().update(skipped=3, seen=2)
