"""Run logging: metrics to ``metrics.jsonl`` + TensorBoard, a tqdm bar, a python logger.

Everything is active on rank 0 only; other ranks get objects with the same methods that do
nothing, so loops never branch on the rank to log.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from engine.checkpoint import atomic_write
from engine.distributed import get_rank, is_main_process

__all__ = ["MetricLogger", "truncate_metrics", "progress", "ThroughputMeter", "setup_logging", "format_seconds", "LOGGER_NAME"]

LOGGER_NAME = "target_ssl"


def _to_float(v: Any) -> float | None:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            return None
        return float(v.detach().item())
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    try:  # numpy scalars
        return float(v)
    except (TypeError, ValueError):
        return None


def json_safe(obj: Any) -> Any:
    """`obj` for json.dumps: NaN / inf -> None (json has no such numbers), tuples -> lists, paths -> str."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


class MetricLogger:
    """Append scalar metrics to ``run_dir/metrics.jsonl`` and TensorBoard (``run_dir/tb``).

    Each line is ``{"step": int, "time": unix seconds, **metrics}``; files are appended to, so a
    resumed run continues the same log. Non-scalar values are written to the json only when they
    are json-serialisable (e.g. an eval summary dict) and skipped by TensorBoard.

    Args:
        run_dir: output directory (created).
        enabled: default ``is_main_process()``; when False every method is a no-op.
        tensorboard: also write TensorBoard event files.
        resume_step: the step a resumed run continues from: records with a larger step (logged
            after the checkpoint by the run that was killed, and about to be logged again) are
            dropped from ``metrics.jsonl`` (atomic rewrite) and purged from TensorBoard, so the
            log holds each step once. None (a fresh run) keeps the file as it is.
    """

    def __init__(
        self, run_dir: str | os.PathLike, enabled: bool | None = None, tensorboard: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.enabled = is_main_process() if enabled is None else enabled
        self.run_dir = Path(run_dir)
        self._file = None
        self._tb = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_metrics(self.run_dir / "metrics.jsonl", resume_step)
        self._file = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import; only when used

            purge = None if resume_step is None else int(resume_step) + 1  # drops events >= purge
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=purge)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record ``metrics`` (floats, 0-dim tensors, or json-able values) at ``step``."""
        if not self.enabled or self._file is None:
            return
        record: dict[str, Any] = {"step": int(step), "time": round(time.time(), 3)}
        for key, value in metrics.items():
            f = _to_float(value)
            if f is not None:
                record[key] = f
                if self._tb is not None and math.isfinite(f):
                    self._tb.add_scalar(key, f, int(step))
            else:
                record[key] = value
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()  # a crash must not lose the metrics logged so far

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def truncate_metrics(path: str | os.PathLike, max_step: int) -> int:
    """Keep only the records of ``path`` (a metrics.jsonl) with ``step <= max_step``, rewriting it
    atomically (temp file + rename); a torn last line from a killed run is dropped too. Returns
    the number of records removed (0 and nothing written when there is nothing to remove)."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, removed = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            keep = int(json.loads(line)["step"]) <= max_step
        except (ValueError, KeyError, TypeError):  # torn or foreign line
            keep = False
        if keep:
            kept.append(line + "\n")
        else:
            removed += 1
    if removed:
        data = "".join(kept).encode("utf-8")
        atomic_write(path, lambda f: f.write(data))
    return removed


def progress(
    iterable: Iterable | None = None,
    total: int | None = None,
    desc: str = "",
    enabled: bool | None = None,
    initial: int = 0,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar on rank 0 (disabled elsewhere). Use ``bar.set_postfix(meter.postfix(...))``.

    Args:
        iterable: what to iterate (or None and call ``bar.update(n)`` yourself).
        total: number of items (defaults to ``len(iterable)``).
        desc: prefix text.
        enabled: default ``is_main_process()``.
        initial: starting count (e.g. the resumed step).
    """
    enabled = is_main_process() if enabled is None else enabled
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        initial=initial,
        disable=not enabled,
        dynamic_ncols=True,
        **kwargs,
    )


def format_seconds(seconds: float) -> str:
    """``3725.2 -> "1:02:05"``; ``"?"`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    return str(datetime.timedelta(seconds=int(round(seconds))))


class ThroughputMeter:
    """Images/s over a sliding window of steps, and the ETA of the remaining steps.

    Call :meth:`update` once per optimizer step with the number of images processed (globally,
    i.e. times world_size, if you want the job throughput).

    Args:
        window: number of recent steps the rate is averaged over (skips early warm-up noise).
        clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, window: int = 20, clock: Callable[[], float] = time.perf_counter) -> None:
        self.window = window
        self._clock = clock
        self._times: deque[float] = deque(maxlen=window + 1)
        self._counts: deque[int] = deque(maxlen=window + 1)
        self.reset()

    def reset(self) -> None:
        self._times.clear()
        self._counts.clear()
        self._times.append(self._clock())
        self._counts.append(0)

    def update(self, n: int) -> None:
        self._times.append(self._clock())
        self._counts.append(self._counts[-1] + int(n))

    @property
    def images_per_sec(self) -> float:
        dt = self._times[-1] - self._times[0]
        if len(self._times) < 2 or dt <= 0:
            return float("nan")
        return (self._counts[-1] - self._counts[0]) / dt

    @property
    def sec_per_step(self) -> float:
        steps = len(self._times) - 1
        if steps < 1:
            return float("nan")
        return (self._times[-1] - self._times[0]) / steps

    def eta_seconds(self, step: int, total_steps: int) -> float:
        """Seconds left for ``total_steps - step`` steps at the current pace."""
        return max(total_steps - step, 0) * self.sec_per_step

    def postfix(self, step: int, total_steps: int, **values: float) -> dict[str, str]:
        """Short strings for ``tqdm.set_postfix``: the given values plus images/s and ETA.

        ``loss`` is shown with 4 decimals, ``lr`` in scientific notation, others with 4 significant
        digits.
        """
        out: dict[str, str] = {}
        for key, v in values.items():
            f = _to_float(v)
            if f is None:
                out[key] = str(v)
            elif key == "lr":
                out[key] = f"{f:.2e}"
            elif key == "loss":
                out[key] = f"{f:.4f}"
            else:
                out[key] = f"{f:.4g}"
        ips = self.images_per_sec
        out["img/s"] = f"{ips:.1f}" if math.isfinite(ips) else "?"
        out["eta"] = format_seconds(self.eta_seconds(step, total_steps))
        return out


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


def setup_logging(
    run_dir: str | os.PathLike | None = None,
    enabled: bool | None = None,
    level: int = logging.INFO,
    name: str = LOGGER_NAME,
) -> logging.Logger:
    """Configure the ``target_ssl`` logger: console + ``run_dir/log.txt`` (appended) on rank 0.

    Other ranks only print errors (prefixed with their rank) to stderr. Calling it again replaces
    the handlers it installed before, so it is safe in tests and notebooks.
    """
    enabled = is_main_process() if enabled is None else enabled
    logger = logging.getLogger(name)
    logger.propagate = False
    for h in list(logger.handlers):
        if getattr(h, "_target_ssl", False):
            logger.removeHandler(h)
            h.close()
    fmt = logging.Formatter("[%(asctime)s %(levelname)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = []
    if enabled:
        logger.setLevel(level)
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(fmt)
        handlers.append(console)
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            file_handler = logging.FileHandler(Path(run_dir) / "log.txt", mode="a", encoding="utf-8")
            file_handler.setFormatter(fmt)
            handlers.append(file_handler)
    else:
        logger.setLevel(logging.ERROR)
        err = logging.StreamHandler(sys.stderr)
        err.addFilter(_RankFilter(get_rank()))
        err.setFormatter(logging.Formatter("[rank %(rank)s %(levelname)s] %(message)s"))
        handlers.append(err)
    for h in handlers:
        h._target_ssl = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    return logger
