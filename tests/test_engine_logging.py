"""Metric logger (json lines + TensorBoard), progress bar, throughput/ETA, python logger."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pytest
import torch

from engine.logging import MetricLogger, ThroughputMeter, format_seconds, progress, setup_logging


def test_metric_logger_jsonl_and_tensorboard(tmp_path: Path) -> None:
    with MetricLogger(tmp_path, enabled=True) as logger:
        logger.log(10, {"loss": torch.tensor(0.5), "lr": 1e-3})
        logger.log(20, {"loss": 0.25, "eval": {"AP": 40.1}})
    with MetricLogger(tmp_path, enabled=True, tensorboard=False) as logger:  # a resumed run appends
        logger.log(30, {"loss": float("nan")})
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [10, 20, 30]
    assert lines[0]["loss"] == 0.5 and lines[0]["lr"] == 1e-3
    assert lines[1]["eval"] == {"AP": 40.1}
    assert lines[2]["loss"] != lines[2]["loss"]  # NaN kept visible

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    events = acc.Scalars("loss")
    assert [(e.step, e.value) for e in events] == [(10, 0.5), (20, 0.25)]


def test_disabled_logger_writes_nothing(tmp_path: Path) -> None:
    logger = MetricLogger(tmp_path / "rank1", enabled=False)
    logger.log(1, {"loss": 1.0})
    logger.close()
    assert not (tmp_path / "rank1").exists()


def test_throughput_and_eta_with_a_fake_clock() -> None:
    ticks = iter([100.0, 101.0, 102.0, 104.0, 106.0])
    meter = ThroughputMeter(window=2, clock=lambda: next(ticks))  # t=100
    for _ in range(4):  # t=101, 102, 104, 106 with 32 images each
        meter.update(32)
    # window of the last 2 steps: 64 images in 4 s
    assert meter.images_per_sec == pytest.approx(16.0)
    assert meter.sec_per_step == pytest.approx(2.0)
    assert meter.eta_seconds(step=4, total_steps=10) == pytest.approx(12.0)
    post = meter.postfix(4, 10, loss=torch.tensor(1.23456), lr=2e-4, acc=0.912345)
    assert post == {"loss": "1.2346", "lr": "2.00e-04", "acc": "0.9123", "img/s": "16.0", "eta": "0:00:12"}


def test_format_seconds() -> None:
    assert format_seconds(3725.2) == "1:02:05"
    assert format_seconds(float("nan")) == "?"


def test_progress_enabled_and_disabled() -> None:
    buf = io.StringIO()
    bar = progress(range(5), desc="train", enabled=True, file=buf)
    assert list(bar) == [0, 1, 2, 3, 4]
    bar.close()
    assert "train" in buf.getvalue() and "5/5" in buf.getvalue()
    quiet = io.StringIO()
    bar = progress(range(3), enabled=False, file=quiet)
    bar.set_postfix({"loss": "1.0"})
    assert list(bar) == [0, 1, 2] and quiet.getvalue() == ""


def test_setup_logging(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logger = setup_logging(tmp_path, enabled=True)
    logger = setup_logging(tmp_path, enabled=True)  # idempotent: no duplicated handlers
    logger.info("hello %d", 7)
    for h in logger.handlers:
        h.flush()
    assert (tmp_path / "log.txt").read_text().count("hello 7") == 1
    assert capsys.readouterr().out.count("hello 7") == 1

    other = setup_logging(tmp_path / "r1", enabled=False)
    other.info("quiet")
    other.error("boom")
    err = capsys.readouterr().err
    assert "quiet" not in err and "boom" in err and "rank 0" in err
    assert not (tmp_path / "r1").exists()
    setup_logging(None, enabled=True, level=logging.WARNING)


def test_resume_step_truncates_metrics_and_tensorboard(tmp_path: Path) -> None:
    """Issue 11 case 9: a run killed at step 50 after a checkpoint at 30 logged 40 and 50; the
    resumed run logs them again. The log must hold each step once."""
    with MetricLogger(tmp_path, enabled=True) as logger:
        for step in (10, 20, 30, 40, 50):
            logger.log(step, {"loss": step / 100})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 60, "lo')  # torn line of a kill mid-write
    # A resumed run is a later process: its event file's name (unix seconds first) sorts after the
    # killed run's, which is what TensorBoard's purge relies on.
    time.sleep(1.1)
    with MetricLogger(tmp_path, enabled=True, resume_step=30) as logger:
        for step in (40, 50):
            logger.log(step, {"loss": step / 1000})
    records = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in records] == [(10, 0.1), (20, 0.2), (30, 0.3), (40, 0.04), (50, 0.05)]
    assert not list(tmp_path.glob(".*.tmp"))

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("loss")] == [
        (10, 0.1), (20, 0.2), (30, 0.3), (40, 0.04), (50, 0.05)]


def test_truncate_metrics_without_changes_leaves_the_file(tmp_path: Path) -> None:
    from engine.logging import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n')
    before = path.stat().st_mtime_ns
    assert truncate_metrics(path, 5) == 0 and path.stat().st_mtime_ns == before
    assert truncate_metrics(path, 1) == 1 and path.read_text() == '{"step": 1}\n'
    assert truncate_metrics(tmp_path / "missing.jsonl", 0) == 0
