"""Stop cleanly, with a checkpoint and advice, when the loss stops being finite or on Ctrl-C."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

__all__ = ["NonFiniteLossError", "check_finite", "save_on_interrupt", "stop_on_signals", "StopRequest", "REQUEUE_EXIT_CODE"]

# Exit status of a run stopped by a signal after a resumable checkpoint: a SLURM script can test it
# and requeue the job (``[ $? -eq 3 ] && scontrol requeue $SLURM_JOB_ID``), which then continues
# with ``--resume auto``.
REQUEUE_EXIT_CODE = 3

_log = logging.getLogger("target_ssl")


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""

    def __init__(self, message: str, step: int, value: float) -> None:
        super().__init__(message)
        self.step = step
        self.value = value


def _as_float(x: torch.Tensor | float) -> float:
    if isinstance(x, torch.Tensor):
        return float(x.detach().float().sum().item()) if x.numel() != 1 else float(x.detach().item())
    return float(x)


def check_finite(
    loss: torch.Tensor | float,
    step: int,
    on_fail: Callable[[], Any] | None = None,
    components: Mapping[str, torch.Tensor | float] | None = None,
) -> None:
    """Raise :class:`NonFiniteLossError` if ``loss`` is NaN/inf, after calling ``on_fail()``.

    Args:
        loss: the scalar training loss (reading it synchronises with the GPU; loops usually do
            that anyway to log it).
        step: the optimizer step, for the message.
        on_fail: e.g. ``lambda: ckpt.save_named(state(), "nonfinite")``; whatever it returns (a
            path) is quoted in the message. If it raises, that is reported and the loss error is
            still raised.
        components: optional named loss terms; the non-finite ones are named in the message.
    """
    value = _as_float(loss)
    if math.isfinite(value):
        return
    saved = ""
    if on_fail is not None:
        try:
            result = on_fail()
            if result is not None:
                saved = f" State saved to {result}."
        except Exception as e:  # the loss error is the one to surface
            _log.error("on_fail callback failed while handling a non-finite loss: %r", e)
            saved = f" (Saving state failed: {type(e).__name__}: {e}.)"
    bad = ""
    if components:
        names = [k for k, v in components.items() if not math.isfinite(_as_float(v))]
        if names:
            bad = f" Non-finite terms: {', '.join(names)}."
    raise NonFiniteLossError(
        f"loss is {value} at step {step}.{bad}{saved} Things to try: lower the learning rate or "
        "lengthen the warmup (--set optim.lr=... optim.warmup_steps=...); enable gradient clipping "
        "(optim.clip_grad=1.0); train in fp32 (run.precision=fp32), since fp16 overflows easily; "
        "check the data for corrupt images or degenerate targets (empty / zero-size boxes).",
        step=step,
        value=value,
    )


@contextlib.contextmanager
def save_on_interrupt(save: Callable[[], Any]) -> Iterator[None]:
    """On KeyboardInterrupt inside the block, call ``save()`` (e.g. a checkpoint) and re-raise."""
    try:
        yield
    except KeyboardInterrupt:
        result = save()
        _log.warning("interrupted; state saved%s", f" to {result}" if result is not None else "")
        raise


class StopRequest:
    """A flag set by a signal handler; read at step boundaries (never a collective in the handler)."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.reason = signal.Signals(signum).name
        _log.warning("%s received: saving a checkpoint at the end of this step, then stopping", self.reason)

    def should_stop(self, device: torch.device | str = "cpu") -> bool:
        """Same answer on every rank: true if any rank got a signal (one small all-reduce)."""
        flag = torch.tensor([1.0 if self.reason else 0.0], device=device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and self.reason is None:
            self.reason = "a signal on another process"
        return bool(flag.item())


@contextlib.contextmanager
def stop_on_signals(signals: tuple[str, ...] = ("SIGINT", "SIGTERM", "SIGUSR1")) -> Iterator[StopRequest]:
    """Turn SIGINT / SIGTERM / SIGUSR1 into a :class:`StopRequest` inside the block; the old handlers
    come back on exit. Off the main thread (where handlers cannot be set) the request never fires."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    old = {}
    for name in signals:
        if hasattr(signal, name):
            sig = getattr(signal, name)
            old[sig] = signal.signal(sig, request._handler)
    try:
        yield request
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
